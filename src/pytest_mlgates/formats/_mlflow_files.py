"""An MLflow file store (``mlruns/<experiment>/<run>/``), read as the text files it is.

Where its run folders are (:func:`file_run_folders`), one run folder read into an
:class:`~pytest_mlgates.formats._mlflow_run.MlflowRun` (``meta.yaml``, ``metrics/``,
``params/``, ``tags/``), and the metric files' line formats of every MLflow version
(:func:`parse_metric_lines`).  MLflow writes no symlinks: one leading out of the store or
the run folder is refused, never followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats._mlflow_run import (
    MAX_METRIC_POINTS,
    MlflowRun,
    artifact_dir,
    present,
    status_name,
    to_int,
)
from pytest_mlgates.runfiles import read_text_file, read_yaml_file

__all__ = ["file_run_folders", "file_runs", "file_store_base", "is_run_folder", "parse_metric_lines",
           "read_file_run", "walk_files"]


def is_run_folder(path: Path) -> bool:
    return present(path / "meta.yaml") and not (path / "meta.yaml").is_dir() and (
        (path / "metrics").is_dir() or (path / "params").is_dir())


def file_store_base(path: Path) -> Path | None:
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


def file_run_folders(path: Path) -> list[Path]:
    """Every run folder of the file store at ``path`` (``.trash`` and dot folders skipped)."""
    if is_run_folder(path):
        return [path]
    base = file_store_base(path)
    if base is None:
        return []
    out = []
    for exp in _listdir(base):
        if exp.startswith("."):
            continue
        for run in _listdir(base / exp):
            if not run.startswith(".") and is_run_folder(base / exp / run):
                # a run folder (or mlruns/, or an experiment) linked out of the store is refused
                _inside(base / exp / run, path, str(base / exp / run), "MLflow store")
                out.append(base / exp / run)
    return out


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
        timestamp = to_int(parts[0], "timestamp", where)
        try:
            value = float(parts[1])
        except ValueError:
            raise RunDirError(f"{where}: value {shown_value(parts[1], 40)} is not a number") from None
        step = to_int(parts[2], "step", where) if n >= 3 else 0
        out.append((step, timestamp, value))
    return out


def _inside(path: Path, folder: Path, shown: str, what: str) -> Path:
    """``path`` after symlinks, refusing anything that leaves ``folder``."""
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(folder))
    if real != root and root not in real.parents:
        raise RunDirError(f"{shown}: symlink leads outside the {what} (to {real}); refused")
    return real


def walk_files(folder: Path) -> list[tuple[str, Path]]:
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


def _read_meta(run_folder: Path) -> dict[str, Any]:
    meta_path = run_folder / "meta.yaml"
    meta = read_yaml_file(meta_path, root=run_folder)  # a link out of the run folder is refused
    if not isinstance(meta, dict):
        raise RunDirError(f"{meta_path}: expected a mapping (run_id: ..., status: ...)")
    if not isinstance(meta.get("run_id") or meta.get("run_uuid"), str):
        raise RunDirError(f"{meta_path}: no 'run_id'")
    return meta


def read_file_run(run_folder: Path, root: Path) -> MlflowRun:
    meta = _read_meta(run_folder)
    run_id = str(meta.get("run_id") or meta.get("run_uuid"))
    metrics: dict[str, list[tuple[int, int, float]]] = {}
    total = 0
    for name, file in walk_files(run_folder / "metrics"):
        points = parse_metric_lines(read_text_file(file, root=run_folder), str(file))
        total += len(points)
        if total > MAX_METRIC_POINTS:
            raise RunDirError(f"{file}: more than {MAX_METRIC_POINTS} metric points in the run")
        points.sort(key=lambda p: (p[0], p[1]))
        metrics[name] = points
    params = {n: read_text_file(f, root=run_folder) for n, f in walk_files(run_folder / "params")}
    tags = {n: read_text_file(f, root=run_folder) for n, f in walk_files(run_folder / "tags")}
    exp_id = meta.get("experiment_id")
    run_name: Any = meta.get("run_name") if meta.get("run_name") not in (None, "") else tags.get("mlflow.runName")
    return MlflowRun(
        run_id=run_id,
        name=None if run_name is None else str(run_name),
        status=status_name(meta.get("status")),
        experiment_id=str(exp_id) if exp_id is not None else run_folder.parent.name,
        metrics=metrics,
        params=params,
        tags=tags,
        artifact_dir=artifact_dir(meta.get("artifact_uri"), root, run_id, run_folder),
        source=run_folder / "meta.yaml",
    )


def file_runs(path: Path, include_deleted: bool) -> list[tuple[str, str, Path]]:
    out = []
    for folder in file_run_folders(path):
        meta = _read_meta(folder)
        if not include_deleted and meta.get("lifecycle_stage") == "deleted":
            continue
        exp_id = meta.get("experiment_id")
        out.append((str(exp_id) if exp_id is not None else folder.parent.name,
                    str(meta.get("run_id") or meta.get("run_uuid")), folder))
    return out
