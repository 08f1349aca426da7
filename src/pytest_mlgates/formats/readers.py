"""One ``Run`` per trainer: ``open_format(path, fmt)`` and the MLflow and TensorBoard runs.

MLflow and TensorBoard record metrics, not checkpoints; a run that logs its checkpoints
keeps them the engine's way (``checkpoints/best_<metric>.pt`` holding ``epoch`` and
``monitor: {metric, mode, value}``) -- as MLflow artifacts, or beside the event files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.rundir import BestRecord, Log, Run, default_mode, regroup_by_logged_epoch

__all__ = ["MlflowRunDir", "TensorBoardRun", "open_format"]

_CKPT_SUFFIXES = (".pt", ".pth")


def _tracked_from_files(folder: Path) -> list[tuple[str, str]]:
    try:
        names = sorted(p.name for p in (folder / "checkpoints").iterdir())
    except OSError:
        return []
    out = []
    for name in names:
        stem, dot, suffix = name.rpartition(".")
        if dot and f".{suffix}" in _CKPT_SUFFIXES and stem.startswith("best_") and len(stem) > 5:
            out.append((stem[5:], default_mode(stem[5:])))
    return out


class MlflowRunDir(Run):
    """An MLflow run: metrics and params from the store, checkpoints from its artifacts."""

    format = "mlflow"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from pytest_mlgates.formats import mlflow

        self.record = mlflow.read_run(path)
        self.artifacts = Run(self.record.artifact_dir) if self.record.artifact_dir is not None else None

    def _read_log(self) -> Log:
        from pytest_mlgates.formats import mlflow

        return regroup_by_logged_epoch(mlflow.to_log(self.record))

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
        return _tracked_from_files(self.artifacts.path) if self.artifacts is not None else []

    @property
    def monitor(self) -> tuple[str, str]:
        tracked = self.tracked
        return tracked[0] if tracked else ("val_loss", "min")

    def resolve(self, rel: str) -> Path:
        """Paths of an MLflow run are paths in its artifacts folder."""
        return self._files().resolve(rel)

    def checkpoint_path(self, name: str) -> Path:
        if name == "best":
            name = f"best_{self.monitor[0]}"
        return self._files().checkpoint_path(name)

    def checkpoint_shown(self, name: str) -> str:
        return self._files().checkpoint_shown(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        return self._files().checkpoint(name)

    def default_checkpoint(self) -> str:
        return self._files().default_checkpoint()

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        if self.artifacts is None:
            shown = self.shown(self.record.source)
            return BestRecord(metric, shown, problem=f"{shown}: run {self.record.run_id} has no local artifacts "
                                                     f"folder, so no best checkpoint for {metric}")
        return self.artifacts.best_checkpoint(metric, mode)


class TensorBoardRun(Run):
    """TensorBoard event files as the log; checkpoints the engine's way beside them."""

    format = "tensorboard"

    def _read_log(self) -> Log:
        from pytest_mlgates.formats import tensorboard

        return regroup_by_logged_epoch(tensorboard.to_log(self.path))

    @property
    def tracked(self) -> list[tuple[str, str]]:
        return _tracked_from_files(self.path)


def open_format(path: Path, fmt: str) -> Run:
    """The ``Run`` reading ``path`` as ``fmt`` (one of ``FORMATS`` other than ``engine``)."""
    if fmt == "lightning":
        from pytest_mlgates.formats.lightning import LightningRun

        return LightningRun(path)
    if fmt == "huggingface":
        from pytest_mlgates.formats.huggingface import HuggingFaceRun

        return HuggingFaceRun(path)
    if fmt == "mlflow":
        return MlflowRunDir(path)
    if fmt == "tensorboard":
        return TensorBoardRun(path)
    raise RunDirError(f"{path}: unknown run format {fmt!r}")
