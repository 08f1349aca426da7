"""MLflow runs, read without MLflow: the SQLite store (``mlflow.db``) and the file store.

Why not ``import mlflow``: it takes seconds to import, pulls in SQLAlchemy and may migrate
(write to) the database it opens. A gate must never change the run it judges, so the SQLite
store is opened read-only through ``sqlite3`` (URI ``file:...?mode=ro``: no journal, no
migration) and the file store (``mlruns/<exp>/<run>/``) is read as text files.

Two storage quirks are undone so the numbers read back as logged: the SQLite store keeps a
NaN as ``value=0, is_nan=1`` and +/-inf as +/-``sys.float_info.max`` (MLflow itself hands the
latter back as 1.8e308; here it is inf again).
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.checkpoint_io import load_checkpoint_file
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.rundir import BestRecord, Run, RunSection
from pytest_mlgates.runfiles import read_text_file, read_yaml_file, resolve_inside, run_file
from pytest_mlgates.runlog import Log, regroup_steps
from pytest_mlgates.runvalues import to_float

__all__ = ["IDENTIFIED_BY", "MlflowRun", "MlflowRunDir", "Mutations", "detect", "find_runs", "parse_metric_lines",
           "read", "read_run", "to_log"]

#: Old file stores write the status as RunStatus' number.
_STATUS_NAMES = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
#: More metric points than this for one run is a broken or hostile store, not a training.
MAX_METRIC_POINTS = 20_000_000
_REQUIRED_TABLES = ("runs", "metrics", "params", "tags")
_SHOWN_IDS = 5


@dataclass
class MlflowRun:
    """One MLflow run as plain data; ``source`` is the file messages name."""

    run_id: str
    name: str | None
    status: str | None  # FINISHED / FAILED / RUNNING / KILLED ...
    experiment_id: str
    metrics: dict[str, list[tuple[int, int, float]]]  # name -> [(step, timestamp_ms, value)]
    params: dict[str, str]
    tags: dict[str, str]
    artifact_dir: Path | None
    source: Path


# --------------------------------------------------------------------------- locating stores


def _present(path: Path) -> bool:
    """Something is there (a FIFO or a dangling link too: reading it then says what it is)."""
    return path.exists() or path.is_symlink()


def _is_run_folder(path: Path) -> bool:
    return _present(path / "meta.yaml") and not (path / "meta.yaml").is_dir() and (
        (path / "metrics").is_dir() or (path / "params").is_dir())


def _file_store_base(path: Path) -> Path | None:
    """The folder holding ``<exp>/<run>/`` folders: ``path/mlruns``, or ``path`` itself."""
    if (path / "mlruns").is_dir():
        return path / "mlruns"
    if path.name == "mlruns" and path.is_dir():
        return path
    return None


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _file_run_folders(path: Path) -> list[Path]:
    """Every run folder of the file store at ``path`` (``.trash`` and dot folders skipped)."""
    if _is_run_folder(path):
        return [path]
    base = _file_store_base(path)
    if base is None:
        return []
    out = []
    for exp in _listdir(base):
        if exp.startswith("."):
            continue
        for run in _listdir(base / exp):
            if not run.startswith(".") and _is_run_folder(base / exp / run):
                # a run folder (or mlruns/, or an experiment) linked out of the store is refused
                _inside(base / exp / run, path, str(base / exp / run), "MLflow store")
                out.append(base / exp / run)
    return out


IDENTIFIED_BY = "mlflow.db, mlruns/ or a run folder's meta.yaml"


def detect(path: Path) -> list[str]:
    """The MLflow files found (names only, or one query of a parent's ``mlflow.db`` for a
    run's artifact folder): ``mlflow.db``, ``mlruns/``, a run folder's ``meta.yaml``."""
    path = Path(path)
    if not path.is_dir():
        return []
    if _present(path / "mlflow.db"):
        return ["mlflow.db"]
    if _is_run_folder(path):
        return ["meta.yaml"]
    base = _file_store_base(path)
    if base is not None and (base.name == "mlruns" or bool(_file_run_folders(path))):
        return ["mlruns/"]
    owner = _sqlite_owner(path)
    return [f"a run folder of {owner[0] / 'mlflow.db'}"] if owner is not None else []


# --------------------------------------------------------------------------- SQLite store


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


def _sqlite_runs(db: Path, include_deleted: bool) -> list[tuple[str, str]]:
    con = _connect(db)
    try:
        _check_tables(con, db)
        where = "" if include_deleted else " WHERE lifecycle_stage IS NULL OR lifecycle_stage != 'deleted'"
        rows = _query(con, db, f"SELECT experiment_id, run_uuid FROM runs{where} ORDER BY start_time, run_uuid")
    finally:
        con.close()
    return [(str(e), str(r)) for e, r in rows]


def _sqlite_owner(path: Path) -> tuple[Path, str] | None:
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
            runs = _sqlite_runs(db, include_deleted=True)
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


def _to_int(cell: Any, what: str, where: str) -> int:
    """A step or timestamp: an integer MLflow could have stored (64 bits)."""
    value: int | None = None
    if isinstance(cell, int) and not isinstance(cell, bool):
        value = cell
    elif isinstance(cell, str) and len(cell) < 64:
        try:
            value = int(cell.strip())
        except ValueError:
            pass
    if value is not None and -(2**63) <= value < 2**63:
        return value
    raise RunDirError(f"{where}: {what} {shown_value(cell, 40)} is not an integer")


def _read_sqlite_run(db: Path, root: Path, run_id: str) -> MlflowRun:
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
            _to_int(step if step is not None else 0, "step", where),
            _to_int(timestamp if timestamp is not None else 0, "timestamp", where),
            _sqlite_value(value, is_nan, f"{where} step {step}"),
        ))
    for points in metrics.values():
        points.sort(key=lambda p: (p[0], p[1]))
    return MlflowRun(
        run_id=str(run_id),
        name=None if name is None else str(name),
        status=_status(status),
        experiment_id=str(exp_id),
        metrics=metrics,
        params={str(k): "" if v is None else str(v) for k, v in params},
        tags={str(k): "" if v is None else str(v) for k, v in tags},
        artifact_dir=_artifact_dir(artifact_uri, root, str(run_id), None),
        source=db,
    )


# --------------------------------------------------------------------------- file store


def parse_metric_lines(text: str, shown: str) -> list[tuple[int, int, float]]:
    """A file-store metric file -> ``[(step, timestamp, value)]`` in file order.

    Lines are ``timestamp value step`` (MLflow 1.x+), ``timestamp value step dataset digest``
    (3.x, dataset-linked), or ``timestamp value`` (pre-1.0, step 0). A file mixing 2-field
    lines with longer ones is a truncated write, not the old format.
    """
    out: list[tuple[int, int, float]] = []
    first_len: int | None = None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        n = len(parts)
        where = f"{shown} line {line_no}"
        if n not in (2, 3, 5):
            plural = "field" if n == 1 else "fields"
            raise RunDirError(f"{where}: {n} {plural}, expected 'timestamp value step'")
        if first_len is None:
            first_len = n
        elif (n == 2) != (first_len == 2):
            raise RunDirError(f"{where}: {n} fields, the lines above have {first_len} (truncated write?)")
        timestamp = _to_int(parts[0], "timestamp", where)
        try:
            value = float(parts[1])
        except ValueError:
            raise RunDirError(f"{where}: value {shown_value(parts[1], 40)} is not a number") from None
        step = _to_int(parts[2], "step", where) if n >= 3 else 0
        out.append((step, timestamp, value))
    return out


def _inside(path: Path, folder: Path, shown: str, what: str) -> Path:
    """``path`` after symlinks, refusing anything that leaves ``folder``."""
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(folder))
    if real != root and root not in real.parents:
        raise RunDirError(f"{shown}: symlink leads outside the {what} (to {real}); refused")
    return real


def _walk_files(folder: Path) -> list[tuple[str, Path]]:
    """``(name, file)`` under ``folder``: names may hold '/', so nested folders are walked.

    MLflow writes no symlinks; one leading out of ``folder`` (to ``/etc``, or back up to the
    run folder) is refused rather than followed, and a loop is walked once.
    """
    out: list[tuple[str, Path]] = []
    if not folder.is_dir():
        return out
    what = f"run's {folder.name}/ folder"
    seen = {_inside(folder, folder.parent, str(folder), "run folder")}
    stack = [(folder, "")]
    while stack:
        current, prefix = stack.pop()
        for name in _listdir(current):
            entry = current / name
            if name in (".", "..") or "\x00" in name:
                raise RunDirError(f"{entry}: file name {name!r} refused")
            real = _inside(entry, folder, str(entry), what)
            if real.is_dir():
                if real not in seen:
                    seen.add(real)
                    stack.append((entry, f"{prefix}{name}/"))
            else:
                out.append((f"{prefix}{name}", entry))
    return sorted(out)


def _status(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _STATUS_NAMES.get(raw, shown_value(raw))
    text = raw.strip() if isinstance(raw, str) else shown_value(raw)
    if text.isdigit():
        return _STATUS_NAMES.get(int(text), text)
    return text.upper() or None


def _read_meta(run_folder: Path) -> dict[str, Any]:
    meta_path = run_folder / "meta.yaml"
    meta = read_yaml_file(meta_path, root=run_folder)  # a link out of the run folder is refused
    if not isinstance(meta, dict):
        raise RunDirError(f"{meta_path}: expected a mapping (run_id: ..., status: ...)")
    if not isinstance(meta.get("run_id") or meta.get("run_uuid"), str):
        raise RunDirError(f"{meta_path}: no 'run_id'")
    return meta


def _read_file_run(run_folder: Path, root: Path) -> MlflowRun:
    meta = _read_meta(run_folder)
    run_id = str(meta.get("run_id") or meta.get("run_uuid"))
    metrics: dict[str, list[tuple[int, int, float]]] = {}
    total = 0
    for name, file in _walk_files(run_folder / "metrics"):
        points = parse_metric_lines(read_text_file(file, root=run_folder), str(file))
        total += len(points)
        if total > MAX_METRIC_POINTS:
            raise RunDirError(f"{file}: more than {MAX_METRIC_POINTS} metric points in the run")
        points.sort(key=lambda p: (p[0], p[1]))
        metrics[name] = points
    params = {n: read_text_file(f, root=run_folder) for n, f in _walk_files(run_folder / "params")}
    tags = {n: read_text_file(f, root=run_folder) for n, f in _walk_files(run_folder / "tags")}
    exp_id = meta.get("experiment_id")
    run_name: Any = meta.get("run_name") if meta.get("run_name") not in (None, "") else tags.get("mlflow.runName")
    return MlflowRun(
        run_id=run_id,
        name=None if run_name is None else str(run_name),
        status=_status(meta.get("status")),
        experiment_id=str(exp_id) if exp_id is not None else run_folder.parent.name,
        metrics=metrics,
        params=params,
        tags=tags,
        artifact_dir=_artifact_dir(meta.get("artifact_uri"), root, run_id, run_folder),
        source=run_folder / "meta.yaml",
    )


def _file_runs(path: Path, include_deleted: bool) -> list[tuple[str, str, Path]]:
    out = []
    for folder in _file_run_folders(path):
        meta = _read_meta(folder)
        if not include_deleted and meta.get("lifecycle_stage") == "deleted":
            continue
        exp_id = meta.get("experiment_id")
        out.append((str(exp_id) if exp_id is not None else folder.parent.name,
                    str(meta.get("run_id") or meta.get("run_uuid")), folder))
    return out


# --------------------------------------------------------------------------- artifacts


def _artifact_dir(uri: Any, root: Path, run_id: str, run_folder: Path | None) -> Path | None:
    """The local artifacts folder, when it lies inside ``root``; else None.

    The URI is tried first (a plain path, ``file:``, or ``mlflow-artifacts:/`` served from
    ``root/mlartifacts``); a store copied from another machine keeps stale absolute URIs, so
    the URI's tail from ``<run_id>`` on (``<exp>/<run>/artifacts``) is then looked for under
    ``root`` and its ``mlruns``/``mlartifacts`` folders.
    """
    root_real = Path(os.path.realpath(root))

    def inside(candidate: Path) -> Path | None:
        try:
            if not candidate.is_dir():
                return None
        except OSError:
            return None
        real = Path(os.path.realpath(candidate))
        return real if real == root_real or root_real in real.parents else None

    candidates: list[Path] = []
    if run_folder is not None:
        candidates.append(run_folder / "artifacts")
    rel_parts: list[str] = []
    if isinstance(uri, str) and uri.strip() and "\x00" not in uri:
        parsed = urllib.parse.urlparse(uri)
        scheme = parsed.scheme.lower()
        if scheme == "mlflow-artifacts":
            rel = urllib.parse.unquote(parsed.path).lstrip("/")
            candidates.append(root / "mlartifacts" / rel)
            rel_parts = [p for p in rel.split("/") if p]
        elif scheme in ("file", ""):
            local = Path(urllib.parse.unquote(parsed.path) if scheme == "file" else uri)
            if ".." not in local.parts:
                candidates.append(local if local.is_absolute() else root / local)
            rel_parts = [p for p in local.parts if p not in ("/", "")]
        if ".." in rel_parts:
            rel_parts = []
        if run_id in rel_parts:
            at = rel_parts.index(run_id)
            for start in range(at, max(at - 3, -1), -1):  # <run>/..., <exp>/<run>/..., ...
                for base in (root, root / "mlruns", root / "mlartifacts"):
                    candidates.append(base.joinpath(*rel_parts[start:]))
    for candidate in candidates:
        found = inside(candidate)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- public API


def _store_root(path: Path) -> Path:
    return path


def find_runs(path: Path, include_deleted: bool = False) -> list[tuple[str, str]]:
    """``(experiment_id, run_id)`` of every run under ``path``, SQLite store first.

    Deleted runs (``lifecycle_stage: deleted``) are left out unless asked for; a run in both
    stores (a migrated file store) is listed once.
    """
    path = Path(path)
    out: list[tuple[str, str]] = []
    if _present(path / "mlflow.db"):
        out += _sqlite_runs(path / "mlflow.db", include_deleted)
    seen = {r for _, r in out}
    out += [(e, r) for e, r, _ in _file_runs(path, include_deleted) if r not in seen]
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
    has_db = _present(db)
    if not has_db and _file_store_base(path) is None and not _is_run_folder(path):
        owner = _sqlite_owner(path)
        if owner is not None and run_id in (None, owner[1]):
            return _read_sqlite_run(owner[0] / "mlflow.db", owner[0], owner[1])
    if run_id is None:
        runs = find_runs(path)
        store = db if has_db else path
        if not runs:
            if has_db or _file_store_base(path) is not None or _is_run_folder(path):
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
    if has_db and any(r == run_id for _, r in _sqlite_runs(db, include_deleted=True)):
        return _read_sqlite_run(db, _store_root(path), run_id)
    for _, rid, folder in _file_runs(path, include_deleted=True):
        if rid == run_id:
            return _read_file_run(folder, _store_root(path))
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


def read(path: Path, section: RunSection | None = None) -> MlflowRunDir:
    return MlflowRunDir(path, section)


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

    @property
    def monitor(self) -> tuple[str, str]:
        tracked = self.tracked
        return tracked[0] if tracked else ("val_loss", "min")

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
            for name, file in _walk_files(folder):
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
