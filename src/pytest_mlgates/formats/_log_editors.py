"""A run copy's log, edited cell by cell in the log's own terms, for ``mlgates prove``:
the :class:`LogEditor` every format's ``Mutations.open_log`` returns, :class:`RowsEditor`
for a table of rows (CSV or JSONL), and the mutations built on an editor (:func:`edit_log`,
:func:`blank_last`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pytest_mlgates.formats._mutation_base import MutationError

__all__ = ["LogEditor", "RowsEditor", "blank_last", "cell_float", "edit_log"]


class LogEditor:
    """A run copy's log, editable cell by cell in the log's own terms.

    ``cells(column)`` gives handles of the cells that hold a value of ``column``, in log
    order (one per epoch for most formats, one per logged point for MLflow/TensorBoard);
    ``get``/``set``/``blank`` read, write and empty one; ``save`` writes the files back."""

    def columns(self) -> list[str]:
        raise NotImplementedError

    def cells(self, column: str) -> list[Any]:
        raise NotImplementedError

    def get(self, column: str, handle: Any) -> float:
        raise NotImplementedError

    def set(self, column: str, handle: Any, value: float) -> None:
        raise NotImplementedError

    def blank(self, column: str, handle: Any) -> None:
        raise NotImplementedError

    def save(self) -> None:
        raise NotImplementedError


def cell_float(cell: Any) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError):
        return float("nan")


class RowsEditor(LogEditor):
    """A table of rows (CSV or JSONL) whose ``key`` column numbers the epoch (or step);
    several rows may share one epoch (Lightning's train and val rows)."""

    def __init__(self, path: Path, key: str = "epoch", jsonl: bool = False) -> None:
        self.path = path
        self.key = key
        self.jsonl = jsonl
        text = path.read_text(encoding="utf-8")
        if jsonl:
            self.rows: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines() if line.strip()]
            self.header: list[str] = list(dict.fromkeys(k for row in self.rows for k in row))
        else:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            self.header = list(reader.fieldnames or [])
            self.rows = list(reader)

    def columns(self) -> list[str]:
        return [c for c in self.header if c != self.key]

    def _filled(self, row: dict[str, Any], column: str) -> bool:
        cell = row.get(column)
        return cell is not None and str(cell).strip() != ""

    def cells(self, column: str) -> list[Any]:
        seen: dict[str, None] = {}
        for row in self.rows:
            if self._filled(row, column) and self._filled(row, self.key):
                seen.setdefault(str(row[self.key]).strip(), None)
        return list(seen)

    def _rows_of(self, handle: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if self._filled(r, self.key) and str(r[self.key]).strip() == handle]

    def get(self, column: str, handle: Any) -> float:
        values = [r[column] for r in self._rows_of(handle) if self._filled(r, column)]
        return cell_float(values[-1]) if values else float("nan")

    def set(self, column: str, handle: Any, value: float) -> None:
        for row in self._rows_of(handle):
            if self._filled(row, column):
                row[column] = float(value) if self.jsonl else repr(float(value))

    def blank(self, column: str, handle: Any) -> None:
        for row in self._rows_of(handle):
            if self.jsonl:
                row.pop(column, None)
            else:
                row[column] = ""

    def drop_last(self) -> None:
        """Drop every row of the last epoch."""
        keys = [str(r[self.key]).strip() for r in self.rows if self._filled(r, self.key)]
        if not keys:
            raise MutationError(f"{self.path.name}: no row to drop")
        self.rows = [r for r in self.rows if str(r.get(self.key, "")).strip() != keys[-1]]

    def text(self) -> str:
        if self.jsonl:
            return "".join(json.dumps(row) + "\n" for row in self.rows)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def save(self) -> None:
        self.path.write_text(self.text(), encoding="utf-8")


def edit_log(open_log: Callable[[Path], LogEditor], columns: Iterable[str],
             value: Callable[[int, float], float], rows: str = "all") -> Callable[[Path], None]:
    """A mutation that rewrites log columns: ``value(index, old) -> new`` for every cell of
    each column (``rows="all"``) or its last one (``"last"``)."""
    wanted = list(columns)

    def apply(run: Path) -> None:
        editor = open_log(run)
        present = editor.columns()
        changed = 0
        for column in wanted:
            if column not in present:
                continue
            handles = editor.cells(column)
            chosen = handles if rows == "all" else handles[-1:]
            for index, handle in enumerate(handles):
                if handle in chosen:
                    editor.set(column, handle, value(index, editor.get(column, handle)))
                    changed += 1
        if not changed:
            raise MutationError(f"no cell of {', '.join(wanted)} in the log to change")
        editor.save()

    return apply


def blank_last(open_log: Callable[[Path], LogEditor], column: str) -> Callable[[Path], None]:
    """A mutation that empties ``column`` at the last epoch that logged it."""
    def apply(run: Path) -> None:
        editor = open_log(run)
        handles = editor.cells(column) if column in editor.columns() else []
        if not handles:
            raise MutationError(f"no cell of {column} in the log to empty")
        editor.blank(column, handles[-1])
        editor.save()

    return apply
