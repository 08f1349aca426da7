"""Run dirs written by other trainers: which trainer wrote a directory, and its reader.

Each trainer gets one module that knows its files (``lightning``, ``huggingface``,
``mlflow``, ``tensorboard``); ``detect`` picks one from the names in a directory, cheaply
(no file is parsed), and ``--run-format`` overrides it.  Nothing heavy is imported here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["FORMATS", "detect"]

#: Every run format, in the order ``detect`` tries them.
FORMATS = ("engine", "lightning", "huggingface", "mlflow", "tensorboard")

_ENGINE = ("training_log.csv", "training_results.json", "metric_history.json", "provenance.json", "splits.json")


def _names(path: Path) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def _has_ckpt(path: Path) -> bool:
    return any(n.endswith(".ckpt") for n in _names(path / "checkpoints"))


def detect(path: Path) -> str | None:
    """The format of the run dir at ``path`` by the names it holds; None when none fits."""
    names = _names(path)
    if names.intersection(_ENGINE):
        return "engine"
    if "metrics.csv" in names or "hparams.yaml" in names or _has_ckpt(path):
        return "lightning"
    if "trainer_state.json" in names or any(n.startswith("checkpoint-") and n[11:].isdigit() for n in names):
        return "huggingface"
    if "mlflow.db" in names or "mlruns" in names or "meta.yaml" in names:
        return "mlflow"
    from pytest_mlgates.formats import mlflow as _mlflow

    # detection never fails a session: the reader reports what is wrong with the files
    with contextlib.suppress(Exception):
        if _mlflow.detect(path):
            return "mlflow"
    if any(n.startswith("events.out.tfevents.") for n in names):
        return "tensorboard"
    if "config.yaml" in names or "checkpoints" in names:
        return "engine"
    return None
