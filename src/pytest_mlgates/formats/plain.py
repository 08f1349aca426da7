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
best.  Weights are found by :func:`pytest_mlgates.rundir.state_dict_of` (``model``,
``state_dict``, ``model_state_dict`` or a bare state dict).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import number_problem, shown_names, shown_value
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.rundir import (
    BestRecord,
    Log,
    Run,
    RunSection,
    checkpoint_monitors,
    float_or_none,
    resume_kinds,
    to_epoch,
    to_float,
)

__all__ = ["IDENTIFIED_BY", "Mutations", "PlainRun", "detect", "parse_plain_log", "read"]

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

_Table = tuple[list[str], list[tuple[int, dict[str, Any]]]]


def _csv_table(text: str, shown: str) -> _Table:
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise RunDirError(f"{shown}: unreadable CSV ({exc})") from None
    numbered = [(n, r) for n, r in enumerate(rows, start=1) if r != []]
    if not numbered:
        raise RunDirError(f"{shown}: empty file (no header)")
    header = [h.strip() for h in numbered[0][1]]
    seen: set[str] = set()
    dupes = sorted({h for h in header if h in seen or seen.add(h)})  # linear: 50,000 columns in ms
    if dupes:
        raise RunDirError(f"{shown}: column {dupes[0]!r} appears twice in the header")
    if "" in header:
        raise RunDirError(f"{shown}: empty column name in the header")
    table: list[tuple[int, dict[str, Any]]] = []
    for line_no, row in numbered[1:]:
        if len(row) != len(header):
            raise RunDirError(f"{shown} line {line_no}: {len(row)} cells, header has {len(header)}")
        table.append((line_no, {h: (c if c.strip() != "" else None) for h, c in zip(header, row)}))
    return header, table


def _jsonl_table(text: str, shown: str) -> _Table:
    names: dict[str, None] = {}
    table: list[tuple[int, dict[str, Any]]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
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
        names.update(dict.fromkeys(str(k) for k in row))
        table.append((line_no, {str(k): (None if v in (None, "") else v) for k, v in row.items()}))
    if not table:
        raise RunDirError(f"{shown}: empty file (no JSON lines)")
    return list(names), table


def parse_plain_log(text: str, shown: str, *, jsonl: bool, epochs_from: int | None = None) -> Log:
    """A plain loop's CSV or JSONL log as a :class:`Log`, rows numbered as written."""
    names, table = _jsonl_table(text, shown) if jsonl else _csv_table(text, shown)
    epochs = [row.get("epoch") for _, row in table]
    unique = "epoch" in names and None not in epochs and len(set(map(str, epochs))) == len(epochs)
    if "epoch" in names and (unique or "step" not in names):
        index = "epoch"
    elif "step" in names:
        index = "step"
    else:
        raise RunDirError(f"{shown}: no 'epoch' or 'step' column to number the rows "
                          f"(columns: {', '.join(names)[:160]})")
    renamed = {n: ("logged_epoch" if n == "epoch" and index == "step" else n) for n in names}
    order = [index] + [n for n in names if n != index]
    columns: dict[str, list[float]] = {"epoch" if n == index else renamed[n]: [] for n in order}
    empty: dict[str, list[int]] = {}
    for line_no, row in table:
        cell = row.get(index)
        if cell is None:
            raise RunDirError(f"{shown} line {line_no}: empty '{index}' cell")
        number = to_epoch(cell, f"{shown} line {line_no}, column {index}")
        columns["epoch"].append(number)
        for name in order[1:]:
            value = row.get(name)
            column = renamed[name]
            if value is None:
                columns[column].append(float("nan"))
                empty.setdefault(column, []).append(int(number))
            else:
                columns[column].append(to_float(value, f"{shown} line {line_no}, column {name}"))
    numbers = columns["epoch"]
    first = int(min(numbers)) if numbers else 1
    if index == "epoch" and epochs_from is not None and numbers and first < epochs_from:
        raise RunDirError(f"{shown}: first epoch is {first}; the gate file's run: says epochs_from: {epochs_from}")
    if index == "epoch":
        first_epoch = epochs_from if epochs_from is not None else (0 if first == 0 else 1)
    else:
        first_epoch = first
    return Log(columns=columns, source=Path(shown), empty=empty, kind="plain", first_epoch=first_epoch)


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
        text = self.read_text(rel)
        jsonl = path.suffix.lower() in _JSONL_SUFFIXES or text.lstrip()[:1] == "{"
        return parse_plain_log(text, shown, jsonl=jsonl, epochs_from=self.section.epochs_from)

    @property
    def tracked(self) -> list[tuple[str, str]]:
        return list(self.section.tracked)

    @property
    def monitor(self) -> tuple[str, str]:
        return self.section.tracked[0] if self.section.tracked else ("val_loss", "min")

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
        return sorted(found, key=lambda p: (_mtime(p), p.name))

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
        if "/" not in name and "." not in name and (name in ("best", "last", "final") or name.startswith("best_")):
            if name.startswith("best"):
                metric = self.monitor[0] if name == "best" else name[len("best_"):]
                rel = self.best_file(metric)
                if rel is None:
                    raise RunDirError(f"{self.section.origin or 'the gate file'}: run: has no best: pattern, "
                                      f"so no best checkpoint of {metric}")
                return self.resolve(rel)
            found = self._named(name)
            if found is None:
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
        raise RunDirError(f"{self.shown(self.path)}: no best file of a tracked metric and no file matching "
                          f"run: checkpoints: {self.section.checkpoints!r} to load")

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        rel = self.best_file(metric)
        if rel is None:
            where = self.section.origin or "the gate file"
            return BestRecord(metric, where, problem=f"{where}: run: has no best: pattern (e.g. "
                                                     "\"ckpt/best_{metric}.pt\"), so no best checkpoint of " + metric)
        shown = self.shown(self.path / rel)
        try:
            path = self.resolve(rel)
        except RunDirError as exc:
            return BestRecord(metric, shown, problem=str(exc))
        if not path.exists():
            return BestRecord(metric, shown, problem=f"{shown}: not found; needs one best checkpoint per "
                                                     f"tracked metric ({metric}, {mode})")
        try:
            ckpt = self.checkpoint(rel)
        except RunDirError as exc:
            return BestRecord(metric, shown, problem=str(exc), path=path)
        value, problem = _recorded_value(ckpt, metric, shown)
        if problem:
            return BestRecord(metric, shown, problem=problem, path=path)
        return BestRecord(metric, shown, epoch=self.log_epoch_of(ckpt), value=value, path=path)

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """The ``last`` checkpoint: model and optimizer state needed; scheduler and RNG
        state named when there (without RNG a resume is not bit-exact)."""
        shown = self.checkpoint_shown("last")
        ckpt = self.checkpoint("last")
        kinds = resume_kinds(ckpt, shown)
        missing = [k for k in ("model", "optimizer") if k not in kinds]
        return shown, self.log_epoch_of(ckpt), kinds, missing

    def resume_path(self) -> Path:
        return self.checkpoint_path("last")


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _recorded_value(ckpt: dict[str, Any], metric: str, shown: str) -> tuple[float | None, str | None]:
    """(the value a best file records for ``metric``, or a one-line problem)."""
    monitor = ckpt.get("monitor")
    if isinstance(monitor, str):
        if monitor != metric:
            return None, f"{shown}: monitor = {shown_value(monitor, 60)}; needs '{metric}'"
        return float_or_none(_scalar(ckpt.get("value"))), None
    records = checkpoint_monitors(ckpt)  # the engine's own {metric: {mode, value}} shape
    if records:
        if metric not in records:
            return None, f"{shown}: monitor names {shown_names(records)}; needs '{metric}'"
        return float_or_none(_scalar(records[metric].get("value"))), None
    metrics = ckpt.get("metrics")
    if isinstance(metrics, dict) and metric in metrics:
        return float_or_none(_scalar(metrics[metric])), None
    return None, None


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (RuntimeError, ValueError):
            return None
    return value


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
        log = self.run.log
        key = "epoch" if "logged_epoch" not in log.columns else "step"
        return m.RowsEditor(path, key=key, jsonl=jsonl)
