"""A hand-written training loop's run dir, described by the gate file's ``run:`` section.

A plain loop writes whatever it likes where it likes, so nothing about the directory
says "plain": the format is chosen only by the gate file (or ``--run-format plain``)::

    run:
      format: plain
      log: logs/metrics.csv          # CSV or JSONL: one row per epoch or per step
      epochs_from: 1                 # the number of the log's first epoch (0 or 1)
      checkpoints: "ckpt/*.pt"
      best: "ckpt/best_{metric}.pt"  # the best file of each tracked metric
      tracked: [{metric: val_loss, mode: min}, {metric: val_f1, mode: max}]
      splits: splits.json            # JSON of named index lists (and optional group ids)

The log's rows are numbered by its ``epoch`` column, as written (never renumbered), or by
its ``step`` column when there is no epoch column or epochs repeat (the epoch column is
then ``logged_epoch``).  A JSONL log is one JSON object per line; a key a line lacks, or
``null``, is an empty cell (``log_complete`` says so), not a NaN.

A best file holds its ``epoch`` (the log's numbering) and either ``monitor`` and
``value`` (``{"epoch": 7, "monitor": "val_loss", "value": 0.21, "model_state_dict": ...}``)
or a ``metrics`` dict; ``best_checkpoints`` matches that epoch and value with the log's
best.  Weights are found by :func:`pytest_mlgates.checkpoint_io.state_dict_of` (``model``,
``state_dict``, ``model_state_dict`` or a bare state dict).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

from pytest_mlgates.bounded import number_problem, shown_names, shown_value
from pytest_mlgates.checkpoint_io import checkpoint_monitors
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.runcsv import CsvColumns, read_csv_columns
from pytest_mlgates.rundir import BestRecord, Run, RunSection, is_checkpoint_alias
from pytest_mlgates.runfiles import MAX_TEXT_BYTES, open_run_file
from pytest_mlgates.runlog import Log
from pytest_mlgates.runvalues import float_or_none, mtime_or_zero, scalar, to_float

__all__ = ["IDENTIFIED_BY", "Mutations", "PlainRun", "detect", "parse_plain_log", "read", "read_plain_log"]

IDENTIFIED_BY = "only a gate file's run: {format: plain, log: ...} or --run-format plain"
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def detect(path: Path) -> list[str]:
    """Never: any directory could be a plain run, so only the gate file says one is."""
    return []


def read(path: Path, section: RunSection | None = None) -> PlainRun:
    if section is None or not section.log:
        raise RunDirError(f"{path}: a plain run is read where the gate file's run: section says "
                          "(run: {format: plain, log: logs/metrics.csv, ...}); no gate file gave one")
    return PlainRun(path, section)


# --------------------------------------------------------------------------- the log


def _csv_columns(stream: BinaryIO, shown: str) -> CsvColumns:
    def check_header(header: list[str]) -> None:
        dupes = sorted(n for n, c in Counter(header).items() if c > 1)  # linear: 50,000 columns in ms
        if dupes:
            raise RunDirError(f"{shown}: column {dupes[0]!r} appears twice in the header")
        if "" in header:
            raise RunDirError(f"{shown}: empty column name in the header")

    return read_csv_columns(stream, shown, numbering="records", header_check=check_header,
                            max_bytes=MAX_TEXT_BYTES)


def _jsonl_columns(stream: BinaryIO, shown: str) -> CsvColumns:
    """One JSON object per line -> columns; a key a line lacks, or null, is an empty cell."""
    import numpy as np

    cells: dict[str, tuple[list[int], list[float]]] = {}
    lines: list[int] = []
    read = 0
    for line_no, raw in enumerate(stream, start=1):
        read += len(raw)
        if read > MAX_TEXT_BYTES:
            raise RunDirError(f"{shown}: larger than the {MAX_TEXT_BYTES} bytes allowed for a text file")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunDirError(f"{shown}: not UTF-8 text (byte {read - len(raw) + exc.start})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{shown} line {line_no}: invalid JSON at column {exc.colno} ({exc.msg})") from None
        except RecursionError:
            raise RunDirError(f"{shown} line {line_no}: invalid JSON (nested too deeply)") from None
        except ValueError as exc:  # a 5000-digit integer: Python's int-from-str limit
            raise RunDirError(f"{shown} line {line_no}: {number_problem(exc)}") from None
        if not isinstance(row, dict):
            raise RunDirError(f"{shown} line {line_no}: expected a JSON object per line, got {type(row).__name__}")
        at = len(lines)
        lines.append(line_no)
        for key, value in row.items():
            found = cells.get(key)
            if found is None:
                found = cells[key] = ([], [])
            if value.__class__ is float or value.__class__ is int:  # the common case, no message built
                found[0].append(at)
                found[1].append(float(value))
                continue
            if value is None or value == "":
                continue
            found[0].append(at)
            found[1].append(to_float(value, f"{shown} line {line_no}, column {key}"))
    if not lines:
        raise RunDirError(f"{shown}: empty file (no JSON lines)")
    arrays: dict[str, Any] = {}
    held: dict[str, Any] = {}
    for name, (rows, values) in cells.items():
        column = np.full(len(lines), np.nan)
        mask = np.zeros(len(lines), dtype=bool)
        column[rows] = values
        mask[rows] = True
        arrays[name], held[name] = column, mask
    return CsvColumns(list(cells), arrays, held, np.asarray(lines, dtype=np.int64))


def _index_of(table: CsvColumns, shown: str) -> str:
    """``epoch`` when every row has a distinct one (a log of epochs), else ``step``."""
    import numpy as np

    names = table.header
    if "epoch" in names:
        epochs = table.arrays["epoch"]
        whole = bool(table.held["epoch"].all())
        if whole and (len(np.unique(epochs)) == len(epochs) or "step" not in names):
            return "epoch"
    if "step" in names:
        return "step"
    if "epoch" in names:
        return "epoch"
    raise RunDirError(f"{shown}: no 'epoch' or 'step' column to number the rows "
                      f"(columns: {', '.join(names)[:160]})")


def read_plain_log(stream: BinaryIO, shown: str, *, jsonl: bool, epochs_from: int | None = None) -> Log:
    """A plain loop's CSV or JSONL log as a :class:`Log`, rows numbered as written.

    A log whose every row has its own ``epoch`` is a log of epochs; otherwise its ``step``
    numbers the rows (a log of steps: a training row per step, evaluation rows between
    them, ``epoch`` optional) and each column's series are the rows that hold it."""
    import numpy as np

    table = _jsonl_columns(stream, shown) if jsonl else _csv_columns(stream, shown)
    index = _index_of(table, shown)
    numbers, held = table.arrays[index], table.held[index]
    if not held.all():
        line = int(table.lines[int(np.argmin(held))])
        raise RunDirError(f"{shown} line {line}: empty '{index}' cell")
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        row = int(bad[0])
        raise RunDirError(f"{shown} line {int(table.lines[row])}, column {index}: "
                          f"epoch {float(numbers[row])} is not a finite number")
    first = int(numbers.min()) if len(numbers) else 1
    if index == "epoch":
        if epochs_from is not None and len(numbers) and first < epochs_from:
            raise RunDirError(f"{shown}: first epoch is {first}; the gate file's run: says epochs_from: {epochs_from}")
        first_epoch = epochs_from if epochs_from is not None else (0 if first == 0 else 1)
        order = ["epoch"] + [n for n in table.header if n != "epoch"]
    else:
        epochs = table.arrays.get("epoch")
        logged = epochs[np.isfinite(epochs)] if epochs is not None else np.empty(0)
        if epochs_from is not None:
            first_epoch = epochs_from
        else:
            first_epoch = 0 if logged.size and float(logged.min()) < 1 else 1
        order = ["step"] + [n for n in table.header if n != "step"]
    arrays = {n: table.arrays[n] for n in order}
    masks = {n: table.held[n] for n in order}
    return Log.from_arrays(arrays, masks, shown, "plain", index=index, first_epoch=first_epoch)


def parse_plain_log(text: str, shown: str, *, jsonl: bool, epochs_from: int | None = None) -> Log:
    """A plain loop's log given as text (see :func:`read_plain_log`)."""
    data = io.BytesIO(text.encode("utf-8", "surrogatepass"))
    return read_plain_log(data, shown, jsonl=jsonl, epochs_from=epochs_from)


# --------------------------------------------------------------------------- the reader


class PlainRun(Run):
    """A hand-written loop's run, read where its ``run:`` section says."""

    format = "plain"
    section: RunSection

    @property
    def log_file(self) -> str:
        assert self.section.log is not None
        return self.section.log

    def _read_log(self) -> Log:
        rel = self.log_file
        path = self.resolve(rel)
        shown = self.shown(self.path / rel)
        with open_run_file(self.path, rel, shown, limit=MAX_TEXT_BYTES) as stream:
            head = stream.read(4096)
            stream.seek(0)
            jsonl = path.suffix.lower() in _JSONL_SUFFIXES or head.lstrip()[:1] == b"{"
            return read_plain_log(stream, shown, jsonl=jsonl, epochs_from=self.section.epochs_from)

    @property
    def tracked(self) -> list[tuple[str, str]]:
        return list(self.section.tracked)

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint_files(self) -> list[Path]:
        """The files the ``checkpoints:`` glob matches inside the run dir, oldest first."""
        pattern = self.section.checkpoints
        if not pattern:
            return []
        root = self.path.resolve()
        found = []
        for path in self.path.glob(pattern):
            try:
                real = self.resolve(str(path.relative_to(self.path)))
            except (RunDirError, ValueError):
                continue  # a match that leads outside the run dir is never opened
            # a FIFO that matches is kept: opening it is refused by name, never waited on
            if not real.is_dir() and real.exists() and real.is_relative_to(root):
                found.append(path)
        return sorted(found, key=lambda p: (mtime_or_zero(p), p.name))

    def best_file(self, metric: str) -> str | None:
        """The ``best:`` pattern for ``metric``, relative to the run dir."""
        return self.section.best.replace("{metric}", metric) if self.section.best else None

    def _named(self, name: str) -> Path | None:
        files = self.checkpoint_files()
        for path in files:
            if path.stem == name:
                return path
        return files[-1] if files else None

    def checkpoint_path(self, name: str) -> Path:
        """``best`` / ``best_<metric>`` (the ``best:`` pattern), ``last`` / ``final`` (the
        file of that name among ``checkpoints:``, else the newest), or a relative path."""
        if is_checkpoint_alias(name):
            if name.startswith("best"):
                metric = self.alias_metric(name)
                rel = self.best_file(metric)
                if rel is None:
                    raise RunDirError(f"{self.section.origin or 'the gate file'}: run: has no best: pattern, "
                                      f"so no best checkpoint of {metric}")
                return self.resolve(rel)
            found = self._named(name)
            if found is None:
                if not self.section.checkpoints:
                    raise RunDirError(f"{self.shown(self.path)}: a {self.format} run keeps no checkpoints the gate "
                                      f"can find; say where they are: run: {{format: {self.format}, checkpoints: "
                                      "\"ckpt/*.pt\"}")
                raise RunDirError(f"{self.shown(self.path)}: no checkpoint matches run: checkpoints: "
                                  f"{self.section.checkpoints!r}")
            return self.resolve(str(found.relative_to(self.path)))
        return self.resolve(name)

    def default_checkpoint(self) -> str:
        for metric, _ in self.tracked[:1]:
            rel = self.best_file(metric)
            if rel is not None and (self.path / rel).is_file():
                return f"best_{metric}"
        if self.checkpoint_files():
            return "last"
        if not self.section.checkpoints and not self.section.best:
            raise RunDirError(f"{self.shown(self.path)}: a {self.format} run keeps no checkpoints the gate can find; "
                              f"say where they are: run: {{format: {self.format}, checkpoints: \"ckpt/*.pt\", "
                              "best: \"ckpt/best_{metric}.pt\", tracked: [...]}")
        raise RunDirError(f"{self.shown(self.path)}: no best file of a tracked metric and no file matching "
                          f"run: checkpoints: {self.section.checkpoints!r} to load")

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        rel = self.best_file(metric)
        if rel is None:
            where = self.section.origin or "the gate file"
            return BestRecord(metric, where, problem=f"{where}: run: has no best: pattern (e.g. "
                                                     "\"ckpt/best_{metric}.pt\"), so no best checkpoint of " + metric)
        found = self.load_best(metric, rel, f"needs one best checkpoint per tracked metric ({metric}, {mode})")
        if isinstance(found, BestRecord):
            return found
        shown, path, ckpt = found
        value, problem = _recorded_value(ckpt, metric, shown)
        if problem:
            return BestRecord(metric, shown, problem=problem, path=path)
        step = next((v for k in ("step", "global_step") if isinstance(v := ckpt.get(k), int)
                     and not isinstance(v, bool)), None)
        return BestRecord(metric, shown, epoch=self.log_epoch_of(ckpt), value=value, path=path, step=step)

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """The ``last`` checkpoint: model and optimizer state needed; scheduler and RNG
        state named when there (without RNG a resume is not bit-exact)."""
        return self.last_checkpoint_resume_state()

    def resume_path(self) -> Path:
        return self.checkpoint_path("last")



def _recorded_value(ckpt: dict[str, Any], metric: str, shown: str) -> tuple[float | None, str | None]:
    """(the value a best file records for ``metric``, or a one-line problem)."""
    monitor = ckpt.get("monitor")
    if isinstance(monitor, str):
        if monitor != metric:
            return None, f"{shown}: monitor = {shown_value(monitor, 60)}; needs '{metric}'"
        return float_or_none(scalar(ckpt.get("value"))), None
    records = checkpoint_monitors(ckpt)  # the engine's own {metric: {mode, value}} shape
    if records:
        if metric not in records:
            return None, f"{shown}: monitor names {shown_names(records)}; needs '{metric}'"
        return float_or_none(scalar(records[metric].get("value"))), None
    metrics = ckpt.get("metrics")
    if isinstance(metrics, dict) and metric in metrics:
        return float_or_none(scalar(metrics[metric])), None
    return None, None



# --------------------------------------------------------------------------- prove


class Mutations(m.Mutations):
    """A plain run's files: the log the ``run:`` section names (CSV or JSONL), the best
    files of its ``best:`` pattern, the ``last`` checkpoint, the splits file."""

    run: PlainRun

    def open_log(self, run: Path) -> m.LogEditor:
        rel = self.rel(self.run.resolve(self.run.log_file))
        if rel is None:
            raise m.MutationError(f"{self.run.log_file}: outside the run dir")
        path = run / rel
        jsonl = path.suffix.lower() in _JSONL_SUFFIXES or path.read_text(encoding="utf-8").lstrip()[:1] == "{"
        key = self.run.log.index  # the column that numbers the file's rows
        return m.RowsEditor(path, key=key, jsonl=jsonl)
