"""A DVCLive run (``dvclive/``), and its ``mlgates prove`` mutations.  DVCLive and DVC are never imported.

What ``dvclive.Live`` writes (its ``dir``, ``dvclive/`` by default)::

    dvclive/
      metrics.json               the latest value of every metric, and "step"
      params.yaml                live.log_params(...)           (run.config, yaml.safe_load)
      plots/metrics/<name>.tsv   one line per live.next_step(): "step\\t<value>" (DVCLive 3),
                                 "timestamp\\tstep\\t<value>" (DVCLive 2); a name with "/"
                                 (train/loss) is a folder: plots/metrics/train/loss.tsv

The folder given may be the one holding ``dvclive/`` or the Live folder itself.  The log has
one row per step (``epoch`` is the step, as for MLflow), each column a metric by its name as
logged (``train/loss``); a step a metric skipped is an empty cell.  When the run also logged
a metric called ``epoch`` (DVCLive's Lightning and Keras callbacks do), the rows are grouped
by it, as for MLflow (``runlog_regroup.regroup_by_logged_epoch``).  DVCLive keeps no
checkpoints of its own: a gate file's ``run:`` section says where they are, as for a plain run
(``checkpoints:``, ``best:``, ``tracked:``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats.plain import PlainRun
from pytest_mlgates.rundir import RunSection
from pytest_mlgates.runfiles import read_text_file, resolve_inside
from pytest_mlgates.runlog import Log
from pytest_mlgates.runlog_regroup import regroup_by_logged_epoch
from pytest_mlgates.runvalues import to_epoch, to_float

__all__ = ["IDENTIFIED_BY", "DvcliveRun", "Mutations", "detect", "read"]

IDENTIFIED_BY = "dvclive/metrics.json or dvclive/plots/metrics/"
SECTION_KEYS = ("checkpoints", "best", "tracked")
#: A run with more metric files than this is refused rather than read.
MAX_METRIC_FILES = 10_000
_MAX_DEPTH = 8


def _live_dir(path: Path) -> Path | None:
    """The Live folder: ``path/dvclive`` or ``path`` itself."""
    for folder in (path / "dvclive", path):
        if (folder / "plots" / "metrics").is_dir() or (
                (folder / "metrics.json").is_file() and ((folder / "params.yaml").is_file() or folder.name == "dvclive")):
            return folder
    return None


def detect(path: Path) -> list[str]:
    path = Path(path)
    live = _live_dir(path)
    if live is None:
        return []
    prefix = "" if live == path else "dvclive/"
    found = [f"{prefix}{n}" for n in ("metrics.json",) if (live / n).is_file()]
    found += [f"{prefix}plots/metrics/"] if (live / "plots" / "metrics").is_dir() else []
    return found


def read(path: Path, section: RunSection | None = None) -> DvcliveRun:
    return DvcliveRun(path, section or RunSection(format="dvclive"))


def _metric_files(root: Path, folder: Path) -> list[tuple[str, Path]]:
    """(metric name, file) of every ``.tsv`` below ``plots/metrics``; symlinks that leave
    the run dir are refused, folders are not followed through symlinks."""
    out: list[tuple[str, Path]] = []
    for current, dirs, files in os.walk(folder):
        depth = len(Path(current).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if depth < _MAX_DEPTH and not (Path(current) / d).is_symlink())
        for name in sorted(files):
            if not name.endswith(".tsv"):
                continue
            path = Path(current) / name
            rel = path.relative_to(folder).as_posix()
            resolve_inside(root, str(path.relative_to(root)), "run dir")
            out.append((rel[: -len(".tsv")], path))
            if len(out) > MAX_METRIC_FILES:
                raise RunDirError(f"{folder}: more than {MAX_METRIC_FILES} metric files")
    return out


def parse_tsv(text: str, shown: str) -> list[tuple[float, float]]:
    """(step, value) of one DVCLive metric file: ``step`` and the value (the last column)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise RunDirError(f"{shown}: empty file (no header)")
    header = lines[0].split("\t")
    if "step" not in header or len(header) < 2:
        raise RunDirError(f"{shown}: header {lines[0][:60]!r} has no 'step' column (a DVCLive metric file has "
                          "'step<TAB>value')")
    at = header.index("step")
    points: list[tuple[float, float]] = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise RunDirError(f"{shown} line {n}: {len(cells)} cells, header has {len(header)} (truncated write?)")
        step = to_epoch(cells[at], f"{shown} line {n}, column step")
        points.append((step, to_float(cells[-1], f"{shown} line {n}, column {header[-1]}")))
    return points


class DvcliveRun(PlainRun):
    """A DVCLive run: the log from ``plots/metrics``; checkpoints where the ``run:`` section says."""

    format = "dvclive"

    @property
    def live(self) -> Path:
        live = _live_dir(self.path)
        if live is None:
            raise RunDirError(f"{self.shown(self.path)}: no dvclive/ folder (metrics.json, plots/metrics/)")
        return live

    @property
    def log_file(self) -> str:
        return str((self.live / "plots" / "metrics").relative_to(self.path))

    def _read_log(self) -> Log:
        folder = self.live / "plots" / "metrics"
        shown = self.shown(folder)
        if not folder.is_dir():
            raise RunDirError(f"{shown}: not found (DVCLive writes a .tsv per metric there)")
        self.resolve(str(folder.relative_to(self.path)))
        series: dict[str, dict[float, float]] = {}
        for name, path in _metric_files(self.path, folder):
            column = "logged_epoch" if name == "epoch" else name
            points = parse_tsv(read_text_file(path, self.shown(path), root=self.path), self.shown(path))
            series[column] = dict(points)  # a step logged twice: the later line wins
        if not series:
            raise RunDirError(f"{shown}: no metric files (.tsv)")
        steps = sorted({s for values in series.values() for s in values})
        columns: dict[str, list[float]] = {"epoch": [float(s) for s in steps]}
        empty: dict[str, list[int]] = {}
        for column, values in series.items():
            columns[column] = [values.get(s, math.nan) for s in steps]
            missing = [int(s) for s in steps if s not in values]
            if missing:
                empty[column] = missing
        log = Log(columns=columns, source=folder, empty=empty, kind="dvclive",
                  first_epoch=int(steps[0]) if steps else 0)
        return regroup_by_logged_epoch(log)

    @property
    def config(self) -> dict[str, Any] | None:
        rel = str((self.live / "params.yaml").relative_to(self.path))
        return self._cached("config", lambda: self._optional_yaml_mapping(rel))  # type: ignore[no-any-return]


class DvcliveLogEditor(m.LogEditor):
    """The ``.tsv`` files of a copy's ``plots/metrics``, cell by cell (a cell is a step)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = {("logged_epoch" if n == "epoch" else n): p for n, p in _metric_files(folder, folder)}
        self.tables: dict[str, tuple[list[str], list[list[str]]]] = {}
        for name, path in self.files.items():
            lines = [ln.split("\t") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            self.tables[name] = (lines[0], lines[1:])

    def columns(self) -> list[str]:
        return list(self.files)

    def cells(self, column: str) -> list[Any]:
        return list(range(len(self.tables[column][1]))) if column in self.tables else []

    def get(self, column: str, handle: Any) -> float:
        return m.cell_float(self.tables[column][1][handle][-1])

    def set(self, column: str, handle: Any, value: float) -> None:
        self.tables[column][1][handle][-1] = repr(float(value))

    def blank(self, column: str, handle: Any) -> None:
        del self.tables[column][1][handle]

    def save(self) -> None:
        for name, (header, rows) in self.tables.items():
            text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
            self.files[name].write_text(text, encoding="utf-8")


class Mutations(m.Mutations):
    """A DVCLive run: the values of its ``plots/metrics/*.tsv`` files; checkpoints as a
    plain run's (the ``run:`` section's)."""

    def open_log(self, run: Path) -> m.LogEditor:
        rel = self.rel(self.run.live / "plots" / "metrics")  # type: ignore[attr-defined]
        if rel is None:
            raise m.MutationError("plots/metrics: outside the run dir")
        return DvcliveLogEditor(run / rel)
