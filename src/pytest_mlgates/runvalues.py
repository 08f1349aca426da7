"""A run's numbers as its files hold them: one cell, one value, one row.

Every reader meets numbers written by a trainer it does not control: a CSV cell (``"0.31"``,
``"nan"``, an empty string), a JSON value, an int pickled in a checkpoint.  These helpers
read them one way for every format, so a non-number is one :class:`RunDirError` line
naming where it was, never a ``ValueError`` from deep inside a reader::

    >>> to_float(" 0.25 ", "runs/x/training_log.csv:3")
    0.25
    >>> to_epoch("inf", "runs/x/training_log.csv:3")   # raises RunDirError:
    runs/x/training_log.csv:3: epoch inf is not a finite number

A :class:`Row` is one epoch of the log as a gate sees it (``run.final.val_loss``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import RunDirError

__all__ = ["MissingColumnError", "Row", "float_or_none", "is_epoch_number", "mtime_or_zero", "numbers_close",
           "scalar", "to_epoch", "to_float"]


class MissingColumnError(RunDirError, AttributeError):
    """A column the run did not log; an AttributeError too, so ``getattr(row, x, d)`` works."""

    def __str__(self) -> str:  # AttributeError's own __str__ must not win in the MRO
        return str(self.args[0]) if self.args else ""


def to_float(cell: Any, where: str) -> float:
    """A log cell as float: numbers, numeric strings, 'nan'/'inf'; anything else is an error."""
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, (int, float)):
        try:
            return float(cell)
        except OverflowError:  # an int of 400 digits: as float("1" * 400) reads it
            return math.inf if cell > 0 else -math.inf
    if isinstance(cell, str):
        try:
            return float(cell.strip())
        except ValueError:
            pass
    raise RunDirError(f"{where}: {shown_value(cell, 40)} is not a number")


def to_epoch(cell: Any, where: str) -> float:
    """An epoch number: like :func:`to_float`, but NaN/Inf are errors (an epoch counts)."""
    value = to_float(cell, where)
    if not math.isfinite(value):
        raise RunDirError(f"{where}: epoch {value} is not a finite number")
    return value


class Row:
    """One epoch of the log; ``row.val_loss`` and ``row["val_loss"]`` both work."""

    __slots__ = ("_label", "_source", "_values")
    _values: dict[str, float]
    _source: str
    _label: str

    def __init__(self, values: dict[str, float], source: str, label: str) -> None:
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_label", label)

    @property
    def epoch(self) -> int:
        value = self._values.get("epoch", float("nan"))
        return int(value) if math.isfinite(value) else -1

    def __getitem__(self, name: str) -> float:
        try:
            return self._values[name]
        except KeyError:
            raise MissingColumnError(
                f"{self._source}: no column '{name}' (columns: {', '.join(list(self._values)[:40])[:200]})"
            ) from None

    def __getattr__(self, name: str) -> float:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Row is read-only")

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str, default: float | None = None) -> float | None:
        return self._values.get(name, default)

    def keys(self) -> list[str]:
        return list(self._values)

    def as_dict(self) -> dict[str, float]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Row({self._label}, epoch={self.epoch})"


def numbers_close(a: float, b: float, tol: float = 1e-9) -> bool:
    """Equal within a relative ``tol`` (NaN equals NaN): a number as written down and read back."""
    if math.isnan(a) and math.isnan(b):
        return True
    return a == b or abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def is_epoch_number(value: Any) -> bool:
    """An int that can number an epoch (a 5000-digit int from a pickle is not one: it
    cannot even be printed)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**53) < value < 2**53


def float_or_none(value: Any) -> float | None:
    """``float(value)``, or None when it is not a number (an int too large for a float is
    +/-inf, as the same digits in a string would be)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1023:
        return math.inf if value > 0 else -math.inf
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def scalar(value: Any) -> Any:
    """A 0-d tensor (Lightning stores scores as tensors, a loop may save ``loss.detach()``)
    as a Python number; anything else as it is."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (RuntimeError, ValueError):
            return None
    return value


def mtime_or_zero(path: Path) -> int:
    """``path``'s mtime in ns, 0 when it cannot be read (a file gone since it was listed)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0
