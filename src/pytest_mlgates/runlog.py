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
:mod:`pytest_mlgates.runlog_regroup` turns rows that repeat an epoch into a log of epochs,
or of steps where the trainer evaluated several times an epoch.

CSV logs are streamed into arrays by ``runcsv.read_csv_columns``.  numpy is imported
when a log is read, never when the plugin loads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["INDEXES", "ArrayLists", "Log", "number_text"]

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
