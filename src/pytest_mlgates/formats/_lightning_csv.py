"""Lightning's CSVLogger ``metrics.csv`` read as a :class:`~pytest_mlgates.runlog.Log`:
train and val rows of one epoch on separate lines, empty cells between, merged into one
row per epoch (or read as a log of steps when validation ran more than once an epoch).
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runcsv import read_csv_columns
from pytest_mlgates.runfiles import MAX_TEXT_BYTES
from pytest_mlgates.runlog import Log
from pytest_mlgates.runlog_regroup import epochs_or_steps

__all__ = ["parse_lightning_csv", "read_lightning_csv"]


def parse_lightning_csv(text: str, shown: str) -> Log:
    """Lightning's ``metrics.csv`` given as text (see :func:`read_lightning_csv`)."""
    return read_lightning_csv(io.BytesIO(text.encode("utf-8", "surrogatepass")), shown)


def read_lightning_csv(stream: BinaryIO, shown: str) -> Log:
    """Lightning's CSVLogger ``metrics.csv``: train and val rows interleaved, blanks between.

    The rows of one epoch are merged, later values winning; epochs keep Lightning's own
    numbers (from 0), and ``step`` stays a column (the step of the epoch's last row).
    A run that validated more than once an epoch (``val_check_interval``: LLM
    fine-tuning) is read as a log of steps instead: every row, numbered by ``step``,
    each column's series the rows that hold it (``runlog_regroup.epochs_or_steps``)."""
    import numpy as np

    def check_header(header: list[str]) -> None:
        if "epoch" not in header and "step" not in header:
            raise RunDirError(f"{shown}: header has no 'epoch' column")

    table = read_csv_columns(stream, shown, ragged="pad", numbering="nonblank", header_check=check_header,
                             max_bytes=MAX_TEXT_BYTES)
    if "epoch" in table.arrays:
        values, epoch_held = table.arrays["epoch"], table.held["epoch"]
        bad = np.flatnonzero(epoch_held & ~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            raise RunDirError(f"{shown} line {int(table.lines[row])}, column epoch: "
                              f"epoch {float(values[row])} is not a finite number")
    # a name that heads no column (a trailing comma) holds nothing a gate could read
    arrays = {n: a for n, a in table.arrays.items() if n}
    held: dict[str, Any] = {n: table.held[n] for n in arrays}
    return epochs_or_steps(arrays, held, shown, "lightning", first_epoch=0)
