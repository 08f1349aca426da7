"""An MLflow SQLite store (``mlflow.db``), read without MLflow and never written.

The database is opened read-only through ``sqlite3`` (URI ``file:...?mode=ro``: no journal,
no migration), after checking that it and the files SQLite may open beside it are regular
files inside the store's folder.  Two storage quirks are undone so the numbers read back as
logged: a NaN is stored as ``value=0, is_nan=1`` and +/-inf as +/-``sys.float_info.max``
(MLflow itself hands the latter back as 1.8e308; here it is inf again).
"""

from __future__ import annotations

import math
import sqlite3
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats._mlflow_run import (
    MAX_METRIC_POINTS,
    MlflowRun,
    artifact_dir,
    status_name,
    to_int,
)
from pytest_mlgates.runfiles import run_file
from pytest_mlgates.runvalues import to_float

__all__ = ["read_sqlite_run", "sqlite_owner", "sqlite_runs"]

_REQUIRED_TABLES = ("runs", "metrics", "params", "tags")


def _connect(db: Path) -> sqlite3.Connection:
    """Read-only: ``mode=ro`` never creates a journal or changes the file.

    The database and the files SQLite may open beside it (``-journal``, ``-wal``, ``-shm``)
    must be regular files inside the store's folder: a link out or a FIFO is refused before
    SQLite opens anything; temporary tables stay in memory (nothing written to /tmp)."""
    real = run_file(db.parent, db.name, str(db), what="MLflow store")
    for suffix in ("-journal", "-wal", "-shm"):
        side = db.parent / (db.name + suffix)
        if side.exists() or side.is_symlink():
            run_file(db.parent, side.name, str(side), what="MLflow store")
    uri = "file:" + urllib.parse.quote(str(real)) + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=5.0)
        con.execute("PRAGMA temp_store = MEMORY")
        con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise RunDirError(f"{db}: {_sqlite_problem(exc)}") from None
    return con


def _sqlite_problem(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text:
        return "not an SQLite database (corrupt or not MLflow's mlflow.db)"
    if "malformed" in text:
        return "corrupt SQLite database (database disk image is malformed; truncated copy?)"
    if "locked" in text:
        return "SQLite database is locked by another process (still being written?)"
    return f"cannot read SQLite database ({text})"


def _query(con: sqlite3.Connection, db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.Error as exc:
        if "no such column" in str(exc):
            raise RunDirError(f"{db}: not an MLflow tracking database ({exc})") from None
        raise RunDirError(f"{db}: {_sqlite_problem(exc)}") from None


def _check_tables(con: sqlite3.Connection, db: Path) -> None:
    tables = {r[0] for r in _query(con, db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in _REQUIRED_TABLES:
        if table not in tables:
            raise RunDirError(f"{db}: not an MLflow tracking database (no table '{table}')")


def sqlite_runs(db: Path, include_deleted: bool) -> list[tuple[str, str]]:
    con = _connect(db)
    try:
        _check_tables(con, db)
        where = "" if include_deleted else " WHERE lifecycle_stage IS NULL OR lifecycle_stage != 'deleted'"
        rows = _query(con, db, f"SELECT experiment_id, run_uuid FROM runs{where} ORDER BY start_time, run_uuid")
    finally:
        con.close()
    return [(str(e), str(r)) for e, r in rows]


def sqlite_owner(path: Path) -> tuple[Path, str] | None:
    """A run's own folder under a SQLite store's artifact root (``mlruns/<exp>/<run_id>/``,
    ``mlartifacts/<exp>/<run_id>/``, ``<artifact_location>/<run_id>/``): the store root holding
    ``mlflow.db`` a few levels up, and the run id, when that database has the run.

    This is how one run of a store that holds many is named: by the folder its artifacts
    (checkpoints) live in."""
    name = path.name
    if len(name) < 8 or any(c not in "0123456789abcdef" for c in name.lower()):
        return None  # MLflow run ids are hex
    for parent in list(path.parents)[:3]:
        db = parent / "mlflow.db"
        if not db.is_file():
            continue
        try:
            runs = sqlite_runs(db, include_deleted=True)
        except RunDirError:
            return None
        if any(r == name for _, r in runs):
            return parent, name
    return None


def _sqlite_value(value: Any, is_nan: Any, where: str) -> float:
    if is_nan:
        return math.nan
    v = to_float(value, where)
    if v == sys.float_info.max:  # MLflow stores +inf as the largest float
        return math.inf
    if v == -sys.float_info.max:
        return -math.inf
    return v


def read_sqlite_run(db: Path, root: Path, run_id: str) -> MlflowRun:
    con = _connect(db)
    try:
        _check_tables(con, db)
        rows = _query(
            con, db,
            "SELECT run_uuid, name, status, experiment_id, artifact_uri FROM runs WHERE run_uuid = ?",
            (run_id,),
        )
        if not rows:
            raise RunDirError(f"{db}: no run '{run_id}'")
        _, name, status, exp_id, artifact_uri = rows[0]
        count = _query(con, db, "SELECT COUNT(*) FROM metrics WHERE run_uuid = ?", (run_id,))[0][0]
        if count > MAX_METRIC_POINTS:
            raise RunDirError(f"{db}: run {run_id} has {count} metric points, more than {MAX_METRIC_POINTS} allowed")
        columns = {r[1] for r in _query(con, db, "PRAGMA table_info(metrics)")}
        nan_col = "is_nan" if "is_nan" in columns else "0"
        metric_rows = _query(
            con, db,
            f"SELECT key, value, timestamp, step, {nan_col} FROM metrics WHERE run_uuid = ? "
            "ORDER BY key, step, timestamp, rowid",
            (run_id,),
        )
        params = _query(con, db, "SELECT key, value FROM params WHERE run_uuid = ?", (run_id,))
        tags = _query(con, db, "SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,))
    finally:
        con.close()
    metrics: dict[str, list[tuple[int, int, float]]] = {}
    for key, value, timestamp, step, is_nan in metric_rows:
        where = f"{db}: run {run_id}, metric '{key}'"
        metrics.setdefault(str(key), []).append((
            to_int(step if step is not None else 0, "step", where),
            to_int(timestamp if timestamp is not None else 0, "timestamp", where),
            _sqlite_value(value, is_nan, f"{where} step {step}"),
        ))
    for points in metrics.values():
        points.sort(key=lambda p: (p[0], p[1]))
    return MlflowRun(
        run_id=str(run_id),
        name=None if name is None else str(name),
        status=status_name(status),
        experiment_id=str(exp_id),
        metrics=metrics,
        params={str(k): "" if v is None else str(v) for k, v in params},
        tags={str(k): "" if v is None else str(v) for k, v in tags},
        artifact_dir=artifact_dir(artifact_uri, root, str(run_id), None),
        source=db,
    )
