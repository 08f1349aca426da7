"""Rows regrouped into a :class:`~pytest_mlgates.runlog.Log` of epochs or of steps.

Trainers log rows that repeat an epoch (Lightning's CSV: a training row and a validation
row per epoch), rows of fractional epochs and steps (the HF Trainer), or one row per
global step with the epoch logged as a metric (MLflow, TensorBoard, W&B, DVCLive).  The
functions here turn such rows into the log the gates read: one row per epoch, later
values of an epoch winning, or -- where the trainer evaluated more than once an epoch and
a log of epochs would lose evaluations -- one row per step, each column sparse.

numpy is imported inside the functions, never when the plugin loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runlog import Log

if TYPE_CHECKING:
    import numpy as np

__all__ = ["epochs_or_steps", "evaluates_within_epochs", "merge_by_epoch", "regroup_by_logged_epoch",
           "regroup_steps"]


def _merge_arrays(epochs: np.ndarray, arrays: Mapping[str, np.ndarray], held: Mapping[str, np.ndarray | None],
                  names: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Rows that may repeat an epoch -> one row per epoch (sorted), the last value of each
    column in an epoch winning; a column no row of an epoch holds is empty there."""
    import numpy as np

    has_epoch = np.isfinite(epochs)
    unique = np.unique(epochs[has_epoch])
    out: dict[str, np.ndarray] = {}
    out_held: dict[str, np.ndarray] = {}
    for name in names:
        values = arrays[name]
        mask = held.get(name)
        rows = has_epoch if mask is None else (has_epoch & mask)
        at = np.flatnonzero(rows)
        column = np.full(len(unique), np.nan)
        filled = np.zeros(len(unique), dtype=bool)
        if at.size:
            slot = np.searchsorted(unique, epochs[at])
            column[slot] = values[at]  # later rows are written later: the last one wins
            filled[slot] = True
        out[name] = column
        out_held[name] = filled
    return unique, out, out_held


def _log_by_epoch(epochs: np.ndarray, arrays: Mapping[str, np.ndarray], held: Mapping[str, np.ndarray | None],
                  names: Sequence[str], shown: str, kind: str, first_epoch: int) -> Log:
    import numpy as np

    unique, columns, filled = _merge_arrays(epochs, arrays, held, names)
    if not len(unique):
        raise RunDirError(f"{shown}: no logged epochs")
    # a column never logged in any epoch is no column (as the trainer's own files say)
    kept = [n for n in names if filled[n].any()]
    # columns in the order they were first logged
    first = {n: 0 if (mask := held.get(n)) is None else int(np.argmax(mask)) for n in kept}
    kept.sort(key=lambda n: first[n])
    out = {"epoch": unique, **{n: columns[n] for n in kept}}
    return Log.from_arrays(out, {n: filled[n] for n in kept}, shown, kind, index="epoch", first_epoch=first_epoch)


def merge_by_epoch(entries: list[tuple[float, dict[str, float]]], shown: str, kind: str,
                   first_epoch: int = 1) -> Log:
    """Rows of (epoch, values) that may repeat an epoch -> one row per epoch, last value wins."""
    rows = [{**{k: v for k, v in values.items() if k != "epoch"}, "\x00epoch": epoch} for epoch, values in entries]
    if not rows:
        raise RunDirError(f"{shown}: no logged epochs")
    table = Log.from_rows(rows, shown, kind, names=["\x00epoch"])
    names = [n for n in table.names if n != "\x00epoch"]
    arrays = {n: table.array(n) for n in names}
    held = {n: table.held(n) for n in names}
    return _log_by_epoch(table.array("\x00epoch"), arrays, held, names, shown, kind, first_epoch)


def evaluates_within_epochs(epochs: np.ndarray, steps: np.ndarray, held: Mapping[str, np.ndarray | None],
                            names: Sequence[str]) -> bool:
    """True when the rows of one epoch hold a column at several different steps in a way
    that a log of one row per epoch would lose: the trainer evaluated (or logged what it
    logs least often) more than once in an epoch.

    The columns logged most often (training loss every N steps) are left out when other
    columns are logged less often: keeping only their last value of each epoch is what a
    log of epochs always did.  When every column is logged as often, any epoch that holds
    values at two steps counts.
    """
    import numpy as np

    counts = {n: len(epochs) if (mask := held.get(n)) is None else int(mask.sum()) for n in names}
    if not counts:
        return False
    top = max(counts.values())
    rarer = [n for n, c in counts.items() if c < top]
    for name in rarer or list(counts):
        mask = held.get(name)
        rows = np.isfinite(epochs) & np.isfinite(steps)
        if mask is not None:
            rows &= mask
        if rows.sum() < 2:
            continue
        pairs = np.unique(np.stack([epochs[rows], steps[rows]], axis=1), axis=0)
        if len(np.unique(pairs[:, 0])) < len(pairs):
            return True
    return False


def epochs_or_steps(arrays: Mapping[str, np.ndarray], held: Mapping[str, np.ndarray | None], shown: str,
                    kind: str, *, epoch_of: Callable[[np.ndarray], np.ndarray] | None = None,
                    first_epoch: int = 1, keep_step: bool = True) -> Log:
    """Rows in file order (each with an ``epoch`` and/or a ``step``) -> a log of epochs, or
    of steps when the trainer evaluated more than once an epoch.

    A log of epochs merges the rows of each epoch, later values winning (``epoch_of`` maps
    the logged epoch to the epoch it counts as: the HF Trainer's fractional epochs are
    rounded up); ``step`` stays a column when ``keep_step``.  A log of steps keeps every
    row that has a step, in file order, with ``epoch`` as logged.  Without a step column
    it is always a log of epochs; without an epoch column, always one of steps.
    """
    import numpy as np

    names = [n for n in arrays if n not in ("epoch", "step")]
    raw_epochs = arrays.get("epoch")
    steps = arrays.get("step")
    if raw_epochs is not None and (epoch_mask := held.get("epoch")) is not None:
        raw_epochs = np.where(epoch_mask, raw_epochs, np.nan)
    if steps is not None and (step_mask := held.get("step")) is not None:
        steps = np.where(step_mask, steps, np.nan)
    has_epochs = raw_epochs is not None and bool(np.isfinite(raw_epochs).any())
    epochs = None
    if has_epochs:
        assert raw_epochs is not None
        epochs = epoch_of(raw_epochs) if epoch_of is not None else raw_epochs
    has_steps = steps is not None and bool(np.isfinite(steps).any())
    if epochs is not None and (not has_steps or not evaluates_within_epochs(epochs, steps, held, names)):  # type: ignore[arg-type]
        merged = (["step"] if keep_step and steps is not None else []) + names
        return _log_by_epoch(epochs, arrays, held, merged, shown, kind, first_epoch)
    if not has_steps:
        raise RunDirError(f"{shown}: no logged epochs or steps")
    assert steps is not None
    keep = np.isfinite(steps)
    out = {"step": steps[keep]}
    out_held: dict[str, np.ndarray] = {}
    if raw_epochs is not None and has_epochs:
        out["epoch"] = raw_epochs[keep]
        out_held["epoch"] = np.isfinite(out["epoch"])
    for name in names:
        out[name] = arrays[name][keep]
        mask = held.get(name)
        out_held[name] = mask[keep] if mask is not None else np.ones(int(keep.sum()), dtype=bool)
    first = first_epoch
    if "epoch" in out and np.isfinite(out["epoch"]).any():
        first = 0 if float(np.nanmin(out["epoch"])) < 1 else 1
    return Log.from_arrays(out, out_held, shown, kind, index="step", first_epoch=first)


def regroup_by_logged_epoch(log: Log) -> Log:
    """A log of one row per *step* with the epoch logged as a metric -> one row per epoch,
    unless the trainer evaluated more than once an epoch (then it stays a log of steps).

    Trainers that log to MLflow or TensorBoard by global step (Lightning's MLFlowLogger and
    TensorBoardLogger, the HF Trainer's MLflow and TensorBoard callbacks) also log the epoch
    as a metric. Each step's values go to the epoch logged at that step (or last logged
    before it), later values winning, as Lightning's CSV rows are merged. Whole-number
    epochs starting at 0 are Lightning's and stay as logged (``first_epoch`` 0); the HF
    Trainer logs the fraction of epochs done, read as the epoch it completes (``ceil``, from
    1). A log without a logged epoch comes back unchanged.

    The log may be a log of steps (``index="step"``, the epoch in ``epoch``) or, as before
    step-level logs, one whose ``epoch`` column holds the steps and ``logged_epoch`` the epochs.
    """
    import numpy as np

    if "logged_epoch" in log:
        marks_name = "logged_epoch"
    elif log.index == "step" and "epoch" in log:
        marks_name = "epoch"
    else:
        return log
    marks_held = log.held(marks_name)
    marks = log.array(marks_name) if marks_held is None else np.where(marks_held, log.array(marks_name), np.nan)
    finite = marks[np.isfinite(marks)]
    if not finite.size:
        return log
    zero_based = float(finite.min()) == 0 and bool(np.all(finite == np.floor(finite)))
    # each step belongs to the epoch logged at it, or last logged before it
    position = np.where(np.isfinite(marks), np.arange(len(marks)), -1)
    position = np.maximum.accumulate(position)
    first_at = int(np.flatnonzero(np.isfinite(marks))[0])
    current = np.where(position >= 0, marks[np.maximum(position, 0)], marks[first_at])
    epochs = current if zero_based else np.maximum(1.0, np.ceil(current - 1e-9))
    steps = log.labels
    names = [n for n in log.names if n not in ("epoch", "step", "logged_epoch")]
    held = {n: log.held(n) for n in names}
    if log.index == "step" and evaluates_within_epochs(epochs, steps, held, names):
        return log
    arrays = {n: log.array(n) for n in names}
    return _log_by_epoch(epochs, arrays, held, names, str(log.source), log.kind, 0 if zero_based else 1)


def regroup_steps(table: Log) -> Log:
    """A table of one row per step as the MLflow and TensorBoard readers give it (its
    ``epoch`` column holds the steps, ``logged_epoch`` the epoch the trainer logged as a
    metric) -> the log the gates read:

    * with a logged epoch: a log of epochs (:func:`regroup_by_logged_epoch`), or a log of
      steps when the trainer evaluated more than once an epoch;
    * without one, where every metric was logged at every step: unchanged, one row per
      step numbered as epochs (a loop that logs ``step=epoch``);
    * without one, where metrics were logged at different steps (training every step,
      evaluation every N): a log of steps.
    """
    import numpy as np

    if table.index != "epoch" or "epoch" not in table:
        return table
    names = [n for n in table.names if n not in ("epoch", "logged_epoch")]
    marks = table.array("logged_epoch") if "logged_epoch" in table else None
    if marks is not None and table.held("logged_epoch") is not None:
        marks = np.where(table.held("logged_epoch"), marks, np.nan)  # type: ignore[arg-type]
    has_marks = marks is not None and bool(np.isfinite(marks).any())
    if not has_marks and all(table.held(n) is None for n in names):
        return table
    arrays = {"step": table.array("epoch")}
    held: dict[str, np.ndarray] = {}
    if has_marks:
        assert marks is not None
        arrays["epoch"] = marks
        held["epoch"] = np.isfinite(marks)
    for name in names:
        arrays[name] = table.array(name)
        mask = table.held(name)
        held[name] = np.ones(len(table), dtype=bool) if mask is None else mask
    steps = Log.from_arrays(arrays, held, table.source, table.kind, index="step", first_epoch=table.first_epoch)
    return regroup_by_logged_epoch(steps) if has_marks else steps
