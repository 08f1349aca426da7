"""What "best" means in a run: a metric's mode (:func:`default_mode`), the best of a series
(:func:`best_index`), the :class:`BestRecord` a format gives for a metric's best checkpoint,
and the checkpoint names every format maps to its own files (:func:`is_checkpoint_alias`).

The readers (``rundir.py``, ``formats/``) and the gates share these; they import nothing
of either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BestRecord", "best_index", "default_mode", "is_checkpoint_alias"]


@dataclass
class BestRecord:
    """What a run says is the best checkpoint for one metric, in the log's epoch numbering.

    ``problem`` is set (one line) when the run has no usable best checkpoint for the metric:
    the file is missing, or names another metric.  ``epoch``/``value`` are None when the
    trainer does not record them.  ``path`` is the file (or HF folder) found.  ``step`` is
    the optimizer step it was saved at, where the trainer records it: a log of steps
    places the checkpoint by it."""

    metric: str
    shown: str
    epoch: int | None = None
    value: float | None = None
    problem: str | None = None
    path: Path | None = None
    step: int | None = None
    #: set when the file is there but its epoch and value cannot be read safely (an
    #: Ultralytics ``best.pt`` pickles a whole model, a ``.keras`` file records neither):
    #: why, in a few words; ``best_checkpoints`` then checks the file's presence only and says so
    unread: str | None = None


def default_mode(metric: str) -> str:
    """``min`` for losses and errors, ``max`` for everything else."""
    low = metric.lower()
    return "min" if ("loss" in low or "error" in low or low.endswith("_err")) else "max"


def best_index(values: Any, mode: str) -> int | None:
    """Index of the best value; ties go to the first occurrence and NaN is never best."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if not array.size or np.isnan(array).all():
        return None
    return int(np.nanargmin(array) if mode == "min" else np.nanargmax(array))


def is_checkpoint_alias(name: str) -> bool:
    """True for ``best``, ``best_<metric>``, ``last`` and ``final``, the names a format maps
    to its own files; a name with a ``/`` or a ``.`` is a path relative to the run dir."""
    return "/" not in name and "." not in name and (name in ("best", "last", "final") or name.startswith("best_"))
