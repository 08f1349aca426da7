"""The training log as columns: what every gate and ``check:`` reads, whoever wrote it.

A log is a table of rows in the order the trainer wrote them.  Rows are numbered by one
column, the log's ``index``:

* ``epoch`` -- one row per epoch (the engine, most hand-written loops, a Lightning or HF
  run that evaluates once an epoch).  Every row is expected to hold every column; a cell
  the trainer left empty reads as NaN and is listed in :attr:`Log.empty`.
* ``step`` -- one row per logged optimizer step (LLM fine-tuning: a training row every
  step, an evaluation row every N steps, maybe with an ``epoch`` column, maybe not).  Rows
  hold what was logged at that step, so a column is *sparse*: its series are the rows
  that hold it, and ``len(eval_loss)`` counts evaluations.

Each column is parsed once into a float64 numpy array (NaN where a row holds no value)
with a boolean mask of the rows that hold one; a gate or a check works on the arrays.
Epoch and step numbers are the log's own everywhere: never renumbered::

    >>> log = Log.from_rows([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.7}],
    ...                     "logs/metrics.jsonl", index="step")
    >>> log.series("eval_loss")
    (array([1.7]), array([2.]))
    >>> log.where(1, "final")
    'at step 2 (final)'

Formats hand their rows over in one of three ways, all giving the same :class:`Log`:
``Log(columns={name: [float, ...]}, source, empty={name: [epoch, ...]})`` (dense lists, the
original API), :meth:`Log.from_rows` (one dict per row; a missing key or ``None`` is an
empty cell) and :meth:`Log.from_arrays` (arrays and masks, what the CSV reader gives).
:func:`merge_by_epoch` and :func:`epochs_or_steps` turn rows that repeat an epoch into a
log of epochs, or of steps where the trainer evaluated several times an epoch.

CSV logs are streamed into arrays by ``runcsv.read_csv_columns``.  numpy is imported
when a log is read, never when the plugin loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlgates.errors import RunDirError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["INDEXES", "ArrayLists", "Log", "epochs_or_steps", "merge_by_epoch", "number_text",
           "regroup_by_logged_epoch", "regroup_steps"]

#: The columns that can number a log's rows.
INDEXES = ("epoch", "step")

def number_text(value: float) -> str:
    """An epoch or step number as messages show it: ``3``, ``0.25``, ``?`` for none."""
    if not math.isfinite(value):
        return "?"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


class ArrayLists(Mapping[str, list[float]]):
    """Columns held as arrays, shown as lists of floats: each list is made on first use
    and kept (``Log.columns``, ``EvalEnv.columns``)."""

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        self.arrays = arrays
        self._lists: dict[str, list[float]] = {}

    def __getitem__(self, name: str) -> list[float]:
        found = self._lists.get(name)
        if found is None:
            found = self.arrays[name].tolist()
            self._lists[name] = found
        return found

    def __contains__(self, name: object) -> bool:
        return name in self.arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def __repr__(self) -> str:
        return f"<columns {list(self.arrays)}>"


class Log:
    """The log of a run: columns over rows, numbered by ``index`` (``epoch`` or ``step``).

    ``columns`` maps a name to its values (a list or array, NaN for an empty cell);
    ``empty`` lists, per column, the row numbers whose cell was empty (the original API:
    numbers of the index column), ``held`` gives the same as boolean masks over the rows
    (wins over ``empty``).  ``first_epoch`` is the number the log gives its first epoch (1
    for the engine, 0 for Lightning), ``kind`` the reader that made it.

    Read it as arrays (:meth:`array`, :meth:`held`, :meth:`series`, :attr:`labels`) in
    anything that may meet a million rows; :attr:`columns` (lists) and :attr:`rows` remain
    for small logs and for tests.
    """

    def __init__(self, columns: Mapping[str, Any] | None = None, source: Path | str = "",
                 empty: Mapping[str, Iterable[float]] | None = None, kind: str = "engine",
                 first_epoch: int = 1, *, index: str = "epoch",
                 held: Mapping[str, Any] | None = None) -> None:
        import numpy as np

        if index not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, not {index!r}")
        self.source = Path(source)
        self.kind = kind
        self.first_epoch = first_epoch
        self.index = index
        arrays: dict[str, np.ndarray] = {}
        for name, values in (columns or {}).items():
            array = np.asarray(values, dtype=np.float64)
            if array.ndim != 1:
                raise ValueError(f"column {name!r} is not one-dimensional")
            arrays[name] = array
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._n = lengths.pop() if lengths else 0
        self._arrays = arrays
        if index in arrays:
            self._labels = arrays[index]
        else:
            self._labels = np.arange(1, self._n + 1, dtype=np.float64)
        self._held: dict[str, np.ndarray] = {}
        for name, numbers in (empty or {}).items():
            if name in arrays and not (held and name in held):
                wanted = np.asarray(list(numbers), dtype=np.float64)
                if wanted.size:
                    self._held[name] = ~np.isin(self._labels, wanted)
        for name, mask in (held or {}).items():
            if name not in arrays:
                continue
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self._n,):
                raise ValueError(f"held mask of {name!r} does not match the rows")
            if not mask.all():
                self._held[name] = mask
        self._columns = ArrayLists(self._arrays)
        self._empty: dict[str, list[int]] | None = None
        self._series: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], held: Mapping[str, Any] | None, source: Path | str,
                    kind: str, *, index: str = "epoch", first_epoch: int = 1) -> Log:
        """Columns as arrays (NaN where empty) and masks of the rows holding a value."""
        return cls(columns=arrays, source=source, kind=kind, first_epoch=first_epoch, index=index,
                   held=held or {})

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, float | None]], source: Path | str, kind: str = "plain",
                  *, index: str = "epoch", first_epoch: int = 1, names: Sequence[str] = ()) -> Log:
        """One dict per row, values already numbers; a key a row lacks (or ``None``) is an
        empty cell.  Columns come in ``names`` order, then in the order they first appear."""
        import numpy as np

        order: dict[str, None] = dict.fromkeys(names)
        cells: dict[str, tuple[list[int], list[float]]] = {}
        count = 0
        for i, row in enumerate(rows):
            count = i + 1
            for name, value in row.items():
                if value is None:
                    continue
                if name not in cells:
                    cells[name] = ([], [])
                    order.setdefault(name, None)
                at, values = cells[name]
                at.append(i)
                values.append(float(value))
        arrays: dict[str, np.ndarray] = {}
        held: dict[str, np.ndarray] = {}
        for name in order:
            at, values = cells.get(name, ([], []))
            column = np.full(count, np.nan)
            mask = np.zeros(count, dtype=bool)
            if at:
                column[at] = values
                mask[at] = True
            arrays[name] = column
            held[name] = mask
        return cls.from_arrays(arrays, held, source, kind, index=index, first_epoch=first_epoch)

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: object) -> bool:
        return name in self._arrays

    @property
    def names(self) -> list[str]:
        return list(self._arrays)

    @property
    def sparse(self) -> bool:
        """True for a log of steps: a column's series are only the rows that hold it."""
        return self.index == "step"

    @property
    def labels(self) -> np.ndarray:
        """The number of each row: its epoch, or its step (the ``index`` column)."""
        return self._labels

    def array(self, name: str) -> np.ndarray:
        """A column over every row, NaN where the row holds no value (KeyError if none)."""
        return self._arrays[name]

    def held(self, name: str) -> np.ndarray | None:
        """The rows that hold a value of ``name``, or None when every row does."""
        return self._held.get(name)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, row numbers) of a column as checks and gates read it: every row of a
        log of epochs (an empty cell is NaN), the rows that hold it in a log of steps."""
        found = self._series.get(name)
        if found is None:
            values, mask = self._arrays[name], self._held.get(name)
            if mask is None or not self.sparse:
                found = (values, self._labels)
            else:
                found = (values[mask], self._labels[mask])
            self._series[name] = found
        return found

    def rows_of(self, name: str) -> np.ndarray:
        """Positions of the rows a column's series runs over (see :meth:`series`)."""
        import numpy as np

        mask = self._held.get(name)
        if mask is None or not self.sparse:
            return np.arange(self._n)
        return np.flatnonzero(mask)

    def last_row(self, name: str) -> int | None:
        """Position of the last row of ``name``'s series (``final.<name>``), None if none."""
        mask = self._held.get(name)
        if mask is None or not self.sparse:
            return self._n - 1 if self._n else None
        import numpy as np

        found = np.flatnonzero(mask)
        return int(found[-1]) if found.size else None

    def as_of(self, name: str, rows: Any) -> np.ndarray:
        """``name``'s value at each of ``rows`` (positions): in a log of steps the last
        value logged at or before the row (the training loss at an evaluation row), NaN
        where none was yet; in a log of epochs the row's own cell."""
        import numpy as np

        values, mask = self._arrays[name], self._held.get(name)
        rows = np.asarray(rows, dtype=np.int64)
        if mask is None or not self.sparse:
            return values[rows]
        last = np.maximum.accumulate(np.where(mask, np.arange(self._n), -1))[rows]
        return np.where(last >= 0, values[np.maximum(last, 0)], np.nan)

    def where(self, row: int, tag: str | None = None) -> str:
        """Where a row is, in the log's own numbers: ``at epoch 12 (final)``; in a log of
        steps ``at step 150000 (final)``, with the row's epoch when the log has one
        (``at step 1500 (epoch 2, min)``)."""
        notes: list[str] = []
        if self.index == "step" and "epoch" in self._arrays:
            epoch = float(self._arrays["epoch"][row])
            if math.isfinite(epoch):
                notes.append(f"epoch {number_text(epoch)}")
        if tag:
            notes.append(tag)
        label = float(self._labels[row]) if -self._n <= row < self._n else math.nan
        return f"at {self.index} {number_text(label)}" + (f" ({', '.join(notes)})" if notes else "")

    # -- the original list API ---------------------------------------------------------------

    @property
    def columns(self) -> Mapping[str, list[float]]:
        """Every column as a list of floats (NaN for an empty cell), in log order."""
        return self._columns

    @property
    def epochs(self) -> list[float]:
        """The row numbers as a list: the epochs, or the steps of a log of steps."""
        return self._columns[self.index] if self.index in self._arrays else self._labels.tolist()

    @property
    def empty(self) -> dict[str, list[int]]:
        """Per column, the row numbers (epochs, or steps) whose cell is empty."""
        if self._empty is None:
            self._empty = {name: [int(v) for v in self._labels[~mask] if math.isfinite(v)]
                           for name, mask in self._held.items()}
        return self._empty

    @property
    def rows(self) -> list[dict[str, float]]:
        names = list(self._arrays)
        lists = [self._columns[n] for n in names]
        return [{n: values[i] for n, values in zip(names, lists)} for i in range(self._n)]

    def __repr__(self) -> str:
        return (f"Log({str(self.source)!r}, kind={self.kind!r}, index={self.index!r}, rows={self._n}, "
                f"columns={list(self._arrays)})")


# --------------------------------------------------------------------------- epochs and steps


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
    return _log_by_epoch(table.array("\x00epoch"), table._arrays, table._held, names, shown, kind, first_epoch)


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
