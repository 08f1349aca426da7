"""MLflow runs, read without MLflow: the SQLite store (``mlflow.db``) and the file store.

Why not ``import mlflow``: it takes seconds to import, pulls in SQLAlchemy and may migrate
(write to) the database it opens. A gate must never change the run it judges, so the SQLite
store is opened read-only through ``sqlite3`` (URI ``file:...?mode=ro``: no journal, no
migration) and the file store (``mlruns/<exp>/<run>/``) is read as text files.

This module is the format: detection, which run of which store a path names
(:func:`find_runs`, :func:`read_run`), the run's log, the reader and ``mlgates prove``'s
mutations.  The stores themselves are read by ``_mlflow_sqlite.py`` and
``_mlflow_files.py``, each into an ``MlflowRun`` (``_mlflow_run.py``).
"""

from __future__ import annotations

import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

from pytest_mlgates.checkpoint_io import load_checkpoint_file
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._mlflow_files import (
    file_run_folders,
    file_runs,
    file_store_base,
    is_run_folder,
    parse_metric_lines,
    read_file_run,
    walk_files,
)
from pytest_mlgates.formats._mlflow_run import MlflowRun, present
from pytest_mlgates.formats._mlflow_sqlite import read_sqlite_run, sqlite_owner, sqlite_runs
from pytest_mlgates.rundir import BestRecord, Run, RunSection
from pytest_mlgates.runfiles import resolve_inside
from pytest_mlgates.runlog import Log
from pytest_mlgates.runlog_regroup import regroup_steps

__all__ = ["IDENTIFIED_BY", "MlflowRunDir", "Mutations", "detect", "find_runs", "read", "read_run", "to_log"]

_SHOWN_IDS = 5


IDENTIFIED_BY = "mlflow.db, mlruns/ or a run folder's meta.yaml"


def detect(path: Path) -> list[str]:
    """The MLflow files found (names only, or one query of a parent's ``mlflow.db`` for a
    run's artifact folder): ``mlflow.db``, ``mlruns/``, a run folder's ``meta.yaml``."""
    path = Path(path)
    if not path.is_dir():
        return []
    if present(path / "mlflow.db"):
        return ["mlflow.db"]
    if is_run_folder(path):
        return ["meta.yaml"]
    base = file_store_base(path)
    if base is not None and (base.name == "mlruns" or bool(file_run_folders(path))):
        return ["mlruns/"]
    owner = sqlite_owner(path)
    return [f"a run folder of {owner[0] / 'mlflow.db'}"] if owner is not None else []


# --------------------------------------------------------------------------- reading a run


def find_runs(path: Path, include_deleted: bool = False) -> list[tuple[str, str]]:
    """``(experiment_id, run_id)`` of every run under ``path``, SQLite store first.

    Deleted runs (``lifecycle_stage: deleted``) are left out unless asked for; a run in both
    stores (a migrated file store) is listed once.
    """
    path = Path(path)
    out: list[tuple[str, str]] = []
    if present(path / "mlflow.db"):
        out += sqlite_runs(path / "mlflow.db", include_deleted)
    seen = {r for _, r in out}
    out += [(e, r) for e, r, _ in file_runs(path, include_deleted) if r not in seen]
    return out


def read_run(path: Path, run_id: str | None = None) -> MlflowRun:
    """The run ``run_id`` (or the only live run) of the store at ``path``.

    ``path`` is a folder holding ``mlflow.db``, a file store (a folder holding ``mlruns/``,
    or ``mlruns/`` itself), or one run folder ``mlruns/<exp>/<run>/``.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory (expected an MLflow store or run folder)")
    db = path / "mlflow.db"
    has_db = present(db)
    if not has_db and file_store_base(path) is None and not is_run_folder(path):
        owner = sqlite_owner(path)
        if owner is not None and run_id in (None, owner[1]):
            return read_sqlite_run(owner[0] / "mlflow.db", owner[0], owner[1])
    if run_id is None:
        runs = find_runs(path)
        store = db if has_db else path
        if not runs:
            if has_db or file_store_base(path) is not None or is_run_folder(path):
                raise RunDirError(f"{store}: no MLflow run in this store (deleted runs are not counted)")
            raise RunDirError(f"{path}: no MLflow store (no mlflow.db, mlruns/ or run folder with meta.yaml)")
        if len(runs) > 1:
            ids = ", ".join(r for _, r in runs[:_SHOWN_IDS])
            more = f" and {len(runs) - _SHOWN_IDS} more" if len(runs) > _SHOWN_IDS else ""
            how = ("a file-store run folder mlruns/<experiment>/<run_id>/ or a store with one run"
                   if not has_db else "a store with one run, or one run's own artifact folder "
                   "(e.g. mlruns/<experiment>/<run_id>/)")
            raise RunDirError(f"{store}: {len(runs)} runs ({ids}{more}); --run-dir takes {how}")
        run_id = runs[0][1]
    if has_db and any(r == run_id for _, r in sqlite_runs(db, include_deleted=True)):
        return read_sqlite_run(db, path, run_id)
    for _, rid, folder in file_runs(path, include_deleted=True):
        if rid == run_id:
            return read_file_run(folder, path)
    raise RunDirError(f"{db if has_db else path}: no run '{run_id}'")


def to_log(run: MlflowRun) -> Log:
    """One row per step (epoch = step); a (metric, step) logged twice keeps its last value."""
    by_step: dict[int, dict[str, float]] = {}
    for name, points in run.metrics.items():
        for step, _, value in points:  # sorted by (step, timestamp): the last write wins
            by_step.setdefault(step, {})[name] = value
    if not by_step:
        raise RunDirError(f"{run.source}: run {run.run_id} logged no metrics")
    names = [n for n in run.metrics if n != "epoch"]
    steps = sorted(by_step)
    columns: dict[str, list[float]] = {"epoch": [float(s) for s in steps]}
    empty: dict[str, list[int]] = {}
    for name in names:
        column = columns.setdefault(name, [])
        for step in steps:
            cells = by_step[step]
            if name in cells:
                column.append(cells[name])
            else:
                column.append(math.nan)
                empty.setdefault(name, []).append(step)
    if "epoch" in run.metrics:  # a logged "epoch" metric must not hide the step column
        logged = {s: v for s, _, v in run.metrics["epoch"]}
        columns["logged_epoch"] = [logged.get(s, math.nan) for s in steps]
        missing = [s for s in steps if s not in logged]
        if missing:
            empty["logged_epoch"] = missing
    return Log(columns=columns, source=run.source, empty=empty, kind="mlflow", first_epoch=0 if steps[0] == 0 else 1)


# --------------------------------------------------------------------------- the reader


class MlflowRunDir(Run):
    """An MLflow run: metrics and params from the store, checkpoints from its artifacts.

    MLflow records metrics, not checkpoints; a run that logs its checkpoints keeps them the
    engine's way (``checkpoints/best_<metric>.pt`` holding ``epoch`` and ``monitor``) as
    artifacts, and they are read as the engine's."""

    format = "mlflow"

    def __init__(self, path: Path, section: RunSection | None = None) -> None:
        super().__init__(path, section)
        from pytest_mlgates.formats.engine import EngineRun

        self.record = read_run(path)
        self.artifacts = EngineRun(self.record.artifact_dir) if self.record.artifact_dir is not None else None

    def _read_log(self) -> Log:
        return regroup_steps(to_log(self.record))

    @property
    def results(self) -> dict[str, Any] | None:
        status = self.record.status
        return {"status": str(status).lower()} if status else None

    @property
    def config(self) -> dict[str, Any] | None:
        return dict(self.record.params)

    def _files(self) -> Run:
        if self.artifacts is None:
            raise RunDirError(f"{self.shown(self.record.source)}: run {self.record.run_id} has no local artifacts folder")
        return self.artifacts

    @property
    def tracked(self) -> list[tuple[str, str]]:
        from pytest_mlgates.formats.tensorboard import tracked_from_files

        return tracked_from_files(self.artifacts.path) if self.artifacts is not None else []

    def _roots(self) -> list[Path]:
        """Where a relative path of this run may lie: the folder given (a run folder
        ``mlruns/<exp>/<run>/``, a store), its artifacts folder, and that folder's run folder
        when it lies inside the folder given (``artifacts/x`` as the spec writes it)."""
        roots = [self.path]
        if self.artifacts is not None:
            artifacts = self.artifacts.path
            roots.append(artifacts)
            owner = artifacts.parent
            given = self.path.resolve()
            if owner.resolve() != given and owner.resolve().is_relative_to(given):
                roots.append(owner)
        return list(dict.fromkeys(roots))

    def _candidates(self, rel: str) -> list[tuple[Path, Path]]:
        """(resolved path, path as shown) of ``rel`` under each root; a path leaving the run
        dir (``..``, a symlink out) is refused as in every format."""
        out = []
        for root in self._roots():
            resolved = resolve_inside(root, rel, "run dir")
            out.append((resolved, root / rel))
        return out

    def resolve(self, rel: str) -> Path:
        """A path relative to the run folder or to its artifacts folder (both forms are
        accepted: ``artifacts/checkpoints/best.pt`` and ``checkpoints/best.pt``); the first
        that exists, else the one in the artifacts folder."""
        if self.artifacts is None:
            return super().resolve(rel)
        candidates = self._candidates(rel)
        for resolved, _ in candidates:
            if resolved.exists():
                return resolved
        return self._files().resolve(rel)

    def locate(self, rel: str) -> tuple[Path | None, list[str]]:
        candidates = self._candidates(rel)
        for resolved, shown in candidates:
            if resolved.exists():
                return resolved, [self.shown(shown)]
        return None, [self.shown(shown) for _, shown in candidates]

    @staticmethod
    def _is_path(name: str) -> bool:
        return "/" in name or "." in name

    def checkpoint_path(self, name: str) -> Path:
        if name == "best":
            name = f"best_{self.monitor[0]}"
        if self._is_path(name):  # relative to the run folder or to its artifacts folder
            self._files()
            return self.resolve(name)
        return self._files().checkpoint_path(name)

    def checkpoint_shown(self, name: str) -> str:
        if self._is_path(name):
            _, looked = self.locate(name)
            return looked[0]
        return self._files().checkpoint_shown(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        if self._is_path(name):
            return load_checkpoint_file(self.checkpoint_path(name), self.checkpoint_shown(name))
        return self._files().checkpoint(name)

    def default_checkpoint(self) -> str:
        return self._files().default_checkpoint()

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        if self.artifacts is None:
            shown = self.shown(self.record.source)
            return BestRecord(metric, shown, problem=f"{shown}: run {self.record.run_id} has no local artifacts "
                                                     f"folder, so no best checkpoint for {metric}")
        return self.artifacts.best_checkpoint(metric, mode)


# --------------------------------------------------------------------------- prove


class StoreLogEditor(m.LogEditor):
    """One run's metric points in a copy of its store, cell by cell: a cell is one logged
    point (step, timestamp), in step order.  SQLite rows are updated in place (a NaN
    stored as MLflow stores it: ``value=0, is_nan=1``); file-store lines are rewritten."""

    def __init__(self, store: Path, record: MlflowRun, root: Path) -> None:
        self.record = record
        source = record.source.resolve()
        rel = source.relative_to(root)
        self.sqlite = source.name == "mlflow.db"
        self.path = store / rel
        #: metric -> [[step, timestamp, value, id-or-None]] sorted by (step, timestamp)
        self.points: dict[str, list[list[Any]]] = {}
        self.deleted: list[Any] = []
        if self.sqlite:
            con = sqlite3.connect(str(self.path))
            try:
                rows = con.execute("SELECT rowid, key, value, timestamp, step FROM metrics WHERE run_uuid = ? "
                                   "ORDER BY key, step, timestamp, rowid", (record.run_id,)).fetchall()
            finally:
                con.close()
            for rowid, key, value, timestamp, step in rows:
                self.points.setdefault(str(key), []).append([step, timestamp, value, rowid])
        else:
            folder = self.path.parent / "metrics"
            for name, file in walk_files(folder):
                pts = parse_metric_lines(file.read_text(encoding="utf-8"), str(file))
                self.points[name] = [[s, t, v, None] for s, t, v in sorted(pts, key=lambda p: (p[0], p[1]))]

    def _key(self, column: str) -> str:
        return "epoch" if column == "logged_epoch" else column

    def columns(self) -> list[str]:
        return ["logged_epoch" if k == "epoch" else k for k in self.points]

    def cells(self, column: str) -> list[Any]:
        return list(range(len(self.points.get(self._key(column), []))))

    def get(self, column: str, handle: Any) -> float:
        return float(self.points[self._key(column)][handle][2])

    def set(self, column: str, handle: Any, value: float) -> None:
        self.points[self._key(column)][handle][2] = value

    def blank(self, column: str, handle: Any) -> None:
        point = self.points[self._key(column)].pop(handle)
        self.deleted.append(point[3])

    def save(self) -> None:
        if self.sqlite:
            con = sqlite3.connect(str(self.path))
            try:
                has_nan = "is_nan" in {r[1] for r in con.execute("PRAGMA table_info(metrics)")}
                for pts in self.points.values():
                    for _step, _ts, value, rowid in pts:
                        value = float(value)
                        stored = 0.0 if math.isnan(value) else max(-sys.float_info.max, min(sys.float_info.max, value))
                        if has_nan:
                            con.execute("UPDATE metrics SET value = ?, is_nan = ? WHERE rowid = ?",
                                        (stored, int(math.isnan(value)), rowid))
                        else:
                            con.execute("UPDATE metrics SET value = ? WHERE rowid = ?", (stored, rowid))
                for rowid in self.deleted:
                    con.execute("DELETE FROM metrics WHERE rowid = ?", (rowid,))
                con.commit()
            finally:
                con.close()
            return
        folder = self.path.parent / "metrics"
        for name, pts in self.points.items():
            lines = "".join(f"{ts} {float(value)!r} {step}\n" for step, ts, value, _ in pts)
            (folder / name).write_text(lines, encoding="utf-8")


class Mutations(m.Mutations):
    """An MLflow run: metric points in its store (SQLite or file store), checkpoints the
    engine's way among its artifacts."""

    @property
    def log_name(self) -> str:
        record = self.run.record  # type: ignore[attr-defined]
        return f"run {record.run_id[:8]}'s metrics"

    def open_log(self, run: Path) -> m.LogEditor:
        record = self.run.record  # type: ignore[attr-defined]
        try:
            return StoreLogEditor(run, record, self.root)
        except ValueError:
            raise m.MutationError(f"{record.source}: the store lies outside the run dir given") from None


#: the reader: the run class itself
read = MlflowRunDir
