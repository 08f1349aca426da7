"""One MLflow run as plain data, and what both store readers share to build one.

:class:`MlflowRun` is what the SQLite store reader (``_mlflow_sqlite.py``) and the file-store
reader (``_mlflow_files.py``) both return: metric points as logged (step, timestamp, value),
params, tags, status and the local artifacts folder.  Here too: the cell parsers both use
(:func:`to_int`, :func:`status_name`) and :func:`artifact_dir`, which finds a run's artifacts
inside the store's folder from its URI (or the URI's tail, for a store copied from elsewhere).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import RunDirError

__all__ = ["MAX_METRIC_POINTS", "MlflowRun", "artifact_dir", "present", "status_name", "to_int"]

#: Old file stores write the status as RunStatus' number.
_STATUS_NAMES = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
#: More metric points than this for one run is a broken or hostile store, not a training.
MAX_METRIC_POINTS = 20_000_000


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


def present(path: Path) -> bool:
    """Something is there (a FIFO or a dangling link too: reading it then says what it is)."""
    return path.exists() or path.is_symlink()


def to_int(cell: Any, what: str, where: str) -> int:
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


def status_name(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _STATUS_NAMES.get(raw, shown_value(raw))
    text = raw.strip() if isinstance(raw, str) else shown_value(raw)
    if text.isdigit():
        return _STATUS_NAMES.get(int(text), text)
    return text.upper() or None


def artifact_dir(uri: Any, root: Path, run_id: str, run_folder: Path | None) -> Path | None:
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
