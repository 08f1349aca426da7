"""Epoch tables that trainers write as CSV (Ultralytics' ``results.csv``, timm's
``summary.csv``, a Keras ``CSVLogger`` file): one parser, so that each format module only
says what differs (its missing-value marker, where its epochs start)."""

from __future__ import annotations

import csv
import fnmatch
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.rundir import Run
from pytest_mlgates.runlog import Log
from pytest_mlgates.runvalues import to_epoch, to_float

__all__ = ["CsvFileRun", "StrippedRowsEditor", "csv_rows", "table_evidence", "table_log"]


def csv_rows(text: str, shown: str, delimiter: str = ",") -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(header, [(line number, {column: cell or None})]): header names stripped (older
    Ultralytics pads them with spaces), blank cells None, ragged rows refused."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise RunDirError(f"{shown}: unreadable CSV ({exc})") from None
    numbered = [(n, r) for n, r in enumerate(rows, start=1) if r != []]
    if not numbered:
        raise RunDirError(f"{shown}: empty file (no header)")
    header = [h.strip() for h in numbered[0][1]]
    dupes = sorted(n for n, c in Counter(header).items() if c > 1)  # linear: 50,000 columns in ms
    if dupes:
        raise RunDirError(f"{shown}: column {dupes[0]!r} appears twice in the header")
    if "" in header:
        raise RunDirError(f"{shown}: empty column name in the header")
    table: list[tuple[int, dict[str, Any]]] = []
    for line_no, row in numbered[1:]:
        if len(row) != len(header):
            raise RunDirError(f"{shown} line {line_no}: {len(row)} cells, header has {len(header)}")
        table.append((line_no, {h: (c.strip() if c.strip() != "" else None) for h, c in zip(header, row)}))
    return header, table


def table_log(header: list[str], table: list[tuple[int, dict[str, Any]]], shown: str, kind: str, *,
              first_epoch: int, missing: tuple[str, ...] = ()) -> Log:
    """One row per epoch, numbered by the ``epoch`` column as written (never renumbered).
    A blank cell, or one of ``missing`` (Keras writes ``NA``), is an empty cell:
    ``log_complete`` says so, ``finite_log`` does not call it a NaN."""
    if "epoch" not in header:
        raise RunDirError(f"{shown}: no 'epoch' column (columns: {', '.join(header)[:160]})")
    names = ["epoch"] + [h for h in header if h != "epoch"]
    columns: dict[str, list[float]] = {n: [] for n in names}
    empty: dict[str, list[int]] = {}
    seen: set[float] = set()
    for line_no, row in table:
        cell = row.get("epoch")
        if cell is None or cell in missing:
            raise RunDirError(f"{shown} line {line_no}: empty 'epoch' cell")
        epoch = to_epoch(cell, f"{shown} line {line_no}, column epoch")
        if epoch in seen:
            raise RunDirError(f"{shown} line {line_no}: epoch {epoch:g} appears twice")
        seen.add(epoch)
        columns["epoch"].append(epoch)
        for name in names[1:]:
            value = row.get(name)
            if value is None or value in missing:
                columns[name].append(math.nan)
                empty.setdefault(name, []).append(int(epoch))
            else:
                columns[name].append(to_float(value, f"{shown} line {line_no}, column {name}"))
    return Log(columns=columns, source=Path(shown), empty=empty, kind=kind, first_epoch=first_epoch)


def table_evidence(path: Path, table: str, clues: tuple[str, ...]) -> list[str]:
    """The defining files of a run dir whose epoch table is ``table``: ``[table, clues
    found...]`` when the table and at least one clue are there, else ``[]`` (a lone
    ``results.csv`` is anybody's).  A clue is a file name, ``name/`` for a folder, or a
    pattern such as ``*.pth.tar`` matched against the names in the folder."""
    path = Path(path)
    if not (path / table).is_file():
        return []
    found = [table]
    for clue in clues:
        if clue.endswith("/"):
            present = (path / clue[:-1]).is_dir()
        elif "*" in clue:
            try:
                present = any(fnmatch.fnmatch(entry.name, clue) for entry in path.iterdir())
            except OSError:
                present = False
        else:
            present = (path / clue).is_file()
        found += [clue] if present else []
    return found if len(found) > 1 else []


class CsvFileRun(Run):
    """A run whose epoch table is one comma-separated file at a fixed place: a subclass
    names it (``log_file``), and the number of its first epoch where that is not 1, as
    for :class:`~pytest_mlgates.runlog.Log`."""

    log_file: str
    first_epoch = 1

    def _read_log(self) -> Log:
        self.resolve(self.log_file)
        shown = self.shown(self.path / self.log_file)
        header, table = csv_rows(self.read_text(self.log_file), shown)
        return table_log(header, table, shown, self.format, first_epoch=self.first_epoch)


class StrippedRowsEditor(m.RowsEditor):
    """A CSV log edited by ``mlgates prove`` whose header may be padded with spaces
    (older Ultralytics ``results.csv``): the names are stripped as the reader strips them."""

    def __init__(self, path: Path, key: str = "epoch", delimiter: str = ",") -> None:
        text = path.read_text(encoding="utf-8")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = [r for r in reader if r]
        self.path, self.key, self.jsonl, self.delimiter = path, key, False, delimiter
        self.header = [h.strip() for h in rows[0]] if rows else []
        self.rows = [{h: c.strip() for h, c in zip(self.header, r)} for r in rows[1:]]

    def text(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.header, lineterminator="\n", delimiter=self.delimiter)
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()
