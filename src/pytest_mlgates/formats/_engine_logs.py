"""The engine's two logs read as a :class:`~pytest_mlgates.runlog.Log`:
``training_log.csv`` (one row per epoch, every cell a number, streamed in chunks) and
``metric_history.json`` (the same rows as JSON, the copy ``formats/engine.py`` compares
with).
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any, BinaryIO

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runcsv import read_csv_columns
from pytest_mlgates.runfiles import MAX_TEXT_BYTES
from pytest_mlgates.runlog import Log
from pytest_mlgates.runvalues import to_epoch, to_float

__all__ = ["parse_engine_csv", "parse_metric_history", "read_engine_csv"]


def parse_engine_csv(text: str, shown: str, index: str = "epoch") -> Log:
    """``training_log.csv`` given as text (see :func:`read_engine_csv`)."""
    return read_engine_csv(io.BytesIO(text.encode("utf-8", "surrogatepass")), shown, index)


def read_engine_csv(stream: BinaryIO, shown: str, index: str = "epoch") -> Log:
    """``training_log.csv``: a header, then one row per epoch, every cell a number; read in
    chunks into one array per column (``runcsv.read_csv_columns``).

    ``index`` is the column that numbers the rows (a plain run's step-only log: ``step``);
    its values become the log's ``epoch`` column."""
    def check_header(header: list[str]) -> None:
        if index not in header:
            raise RunDirError(f"{shown}: header has no '{index}' column (header: {','.join(header)[:120]})")
        dupes = sorted(n for n, c in Counter(header).items() if c > 1)  # linear: 50,000 columns in ms
        if dupes:
            raise RunDirError(f"{shown}: column {dupes[0]!r} appears twice in the header")
        if "" in header:
            raise RunDirError(f"{shown}: empty column name in the header")

    table = read_csv_columns(stream, shown, index=index, numbering="nonblank", header_check=check_header,
                             max_bytes=MAX_TEXT_BYTES)
    arrays = dict(table.arrays)
    if index != "epoch":
        arrays = {"epoch": arrays[index], **arrays}
    return Log.from_arrays(arrays, table.held, shown, "engine")


def parse_metric_history(data: Any, shown: str) -> Log:
    """``metric_history.json``: ``{"columns": [...], "rows": [{col: value}, ...]}``."""
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise RunDirError(f"{shown}: expected an object with a 'rows' list")
    names = data.get("columns")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        ordered: dict[str, None] = {}  # first-seen order, linear in the keys
        for row in data["rows"]:
            if isinstance(row, dict):
                ordered.update(dict.fromkeys(k for k in row if isinstance(k, str)))
        names = list(ordered)
    if "epoch" not in names:
        raise RunDirError(f"{shown}: no 'epoch' column")
    rows: list[dict[str, float | None]] = []
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise RunDirError(f"{shown}: rows[{i}] is not an object")
        values: dict[str, float | None] = {}
        for name in names:
            cell = row.get(name)
            if cell is None or cell == "":
                if name == "epoch":
                    raise RunDirError(f"{shown}: rows[{i}] has no epoch")
                values[name] = None
            elif name == "epoch":
                values[name] = to_epoch(cell, f"{shown}: rows[{i}].epoch")
            else:
                values[name] = to_float(cell, f"{shown}: rows[{i}].{name}")
        rows.append(values)
    return Log.from_rows(rows, shown, "metric_history", names=names)
