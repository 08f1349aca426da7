"""A Hugging Face Trainer's ``trainer_state.json``: its ``log_history`` read as a log, and edited.

:func:`parse_trainer_state` turns ``log_history`` into the :class:`~pytest_mlgates.runlog.Log`
the gates read (a log of epochs, or of steps when the Trainer evaluated more than once an
epoch); :class:`StateLogEditor` is the same entries as ``mlgates prove`` edits them, cell by
cell.  Both count a fractional ``epoch`` as the epoch it completes (:func:`epochs_done`).
numpy is imported when a log is read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.runlog import Log
from pytest_mlgates.runlog_regroup import epochs_or_steps
from pytest_mlgates.runvalues import float_or_none, to_epoch, to_float

__all__ = ["StateLogEditor", "epochs_done", "parse_trainer_state"]


def epochs_done(value: Any) -> int | None:
    """A fractional epoch count (the HF Trainer's ``epoch``) as the epoch it completes, from 1;
    None when it is not a finite number."""
    raw = float_or_none(value)
    if raw is None or not math.isfinite(raw):
        return None
    return max(1, math.ceil(raw - 1e-9))


def parse_trainer_state(data: Any, shown: str) -> Log:
    """Hugging Face ``trainer_state.json``: ``log_history`` entries grouped by epoch.

    Entries carry a fractional ``epoch`` (the epochs done); each is assigned to the epoch
    it completes (``ceil``, from 1, the Trainer's own count). The final summary entry
    (``train_runtime``...) is skipped.  A Trainer that evaluated more than once an epoch
    (``eval_strategy="steps"``: LLM fine-tuning) is read as a log of steps instead: one row
    per entry, numbered by its ``step``, ``epoch`` as logged, each column's series the
    entries that hold it (``runlog_regroup.epochs_or_steps``).
    """
    import numpy as np

    history = data.get("log_history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        raise RunDirError(f"{shown}: no 'log_history' list")
    rows: list[dict[str, float | None]] = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "train_runtime" in entry:
            continue
        row: dict[str, float | None] = {
            k: to_float(v, f"{shown}: log_history[{i}].{k}")
            for k, v in entry.items()
            if k not in ("epoch", "step") and isinstance(v, (int, float, str))
        }
        if "epoch" in entry:
            row["epoch"] = to_epoch(entry["epoch"], f"{shown}: log_history[{i}].epoch")
        step = entry.get("step")
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            row["step"] = float(step)
        if "epoch" in row or "step" in row:
            rows.append(row)
    if not rows:
        raise RunDirError(f"{shown}: no logged epochs")
    table = Log.from_rows(rows, shown, "huggingface", names=["epoch", "step"])
    arrays = {n: table.array(n) for n in table.names}
    held = {n: table.held(n) for n in table.names}

    def completed(epochs: Any) -> Any:
        return np.maximum(np.ceil(epochs - 1e-9), 1.0)

    return epochs_or_steps(arrays, held, shown, "huggingface", epoch_of=completed, keep_step=False)


class StateLogEditor(m.LogEditor):
    """``trainer_state.json``'s ``log_history``, cell by cell: a cell is a metric in the
    entries of one epoch (the epoch each entry completes, as the log reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text(encoding="utf-8"))
        history = self.data.get("log_history") if isinstance(self.data, dict) else None
        if not isinstance(history, list):
            raise m.MutationError(f"{path.name}: no log_history to edit")
        self.entries = [e for e in history if isinstance(e, dict) and "epoch" in e and "train_runtime" not in e]

    @staticmethod
    def _epoch(entry: dict[str, Any]) -> int:
        return epochs_done(entry.get("epoch")) or 1

    def columns(self) -> list[str]:
        return list(dict.fromkeys(k for e in self.entries for k in e if k not in ("epoch", "step")))

    def cells(self, column: str) -> list[Any]:
        return list(dict.fromkeys(self._epoch(e) for e in self.entries if column in e))

    def _of(self, column: str, handle: Any) -> list[dict[str, Any]]:
        return [e for e in self.entries if column in e and self._epoch(e) == handle]

    def get(self, column: str, handle: Any) -> float:
        found = self._of(column, handle)
        return m.cell_float(found[-1][column]) if found else float("nan")

    def set(self, column: str, handle: Any, value: float) -> None:
        for entry in self._of(column, handle):
            entry[column] = value

    def blank(self, column: str, handle: Any) -> None:
        for entry in self._of(column, handle):
            del entry[column]

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data), encoding="utf-8")
