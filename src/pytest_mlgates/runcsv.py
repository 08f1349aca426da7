"""A CSV log, streamed into one float64 array per column.

The file is read in chunks (a stream the format opened through
:func:`pytest_mlgates.runfiles.open_run_file`), and a chunk of plain numbers is converted
by numpy in one call; anything else in a chunk (quotes, a stray ``\\r``, a cell that is not
a number, a ragged row) hands the rest of the file to Python's :mod:`csv` module, which
names the file and line of the first problem::

    >>> with open_run_file(run, "training_log.csv") as fh:
    ...     table = read_csv_columns(fh, "runs/x/training_log.csv", index="epoch")
    >>> table.header, len(table)
    (['epoch', 'train_loss', 'val_loss'], 12)

A format turns the :class:`CsvColumns` into a ``runlog.Log`` (``Log.from_arrays``).
numpy is imported when a log is read, never when the plugin loads.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from pytest_mlgates.errors import RunDirError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CsvColumns", "read_csv_columns"]

#: How much of a CSV log is read and converted at a time (bytes).
CHUNK_BYTES = 4 << 20


class CsvColumns:
    """What :func:`read_csv_columns` gives: the header, each column as a float64 array
    (NaN where empty), the masks of the rows holding a value, and each row's line number
    (as the format's messages count lines)."""

    def __init__(self, header: list[str], arrays: dict[str, np.ndarray], held: dict[str, np.ndarray],
                 lines: np.ndarray) -> None:
        self.header = header
        self.arrays = arrays
        self.held = held
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)


class _Parts:
    """Column pieces gathered chunk by chunk, joined once at the end."""

    def __init__(self, ncol: int) -> None:
        self.values: list[list[np.ndarray]] = [[] for _ in range(ncol)]
        self.held: list[list[np.ndarray]] = [[] for _ in range(ncol)]
        self.lines: list[np.ndarray] = []

    def add(self, values: np.ndarray, held: np.ndarray, lines: np.ndarray) -> None:
        for j in range(values.shape[1]):
            self.values[j].append(values[:, j].copy())
            self.held[j].append(held[:, j].copy())
        self.lines.append(lines)


def _bad_cell(shown: str, line: int, name: str, cell: str, index: str | None) -> RunDirError | None:
    """The one-line error of a cell that is not a number (or not a finite row number)."""
    try:
        value = float(cell.strip())
    except ValueError:
        shown_cell = cell if len(repr(cell)) < 40 else repr(cell)[:37] + "..."
        return RunDirError(f"{shown} line {line}, column {name}: {shown_cell!r} is not a number")
    if name == index and not math.isfinite(value):
        return RunDirError(f"{shown} line {line}, column {name}: epoch {value} is not a finite number")
    return None


def read_csv_columns(stream: BinaryIO, shown: str, *, index: str | None = None, ragged: str = "strict",
                     numbering: str = "records", header_check: Callable[[list[str]], None] | None = None,
                     max_bytes: int | None = None) -> CsvColumns:
    """A CSV log read in chunks into one float64 array per column.

    ``index``: the column numbering the rows; an empty cell there is an error
    (``line 7: empty 'epoch' cell``) and so is a number that is not finite.  ``ragged``:
    ``strict`` (a row with another number of cells than the header is an error) or
    ``pad`` (Lightning's ``DictReader``: fewer cells are empty, more are an error).
    ``numbering``: line numbers in messages count CSV ``records`` (blank ones included)
    or only ``nonblank`` ones (the header is 1).  ``header_check`` validates the header
    (stripped names) before any row is read.  Every problem is one RunDirError naming
    ``shown`` and the line.
    """
    import numpy as np

    reader = _CsvReader(stream, shown, index=index, ragged=ragged, numbering=numbering, max_bytes=max_bytes)
    header = reader.read_header()
    if header_check is not None:
        header_check(header)
    reader.read_rows()
    parts = reader.parts
    arrays: dict[str, np.ndarray] = {}
    held: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        arrays[name] = np.concatenate(parts.values[j]) if parts.values[j] else np.empty(0)
        held[name] = np.concatenate(parts.held[j]) if parts.held[j] else np.empty(0, dtype=bool)
    lines = np.concatenate(parts.lines) if parts.lines else np.empty(0, dtype=np.int64)
    return CsvColumns(header, arrays, held, lines)


class _CsvReader:
    """The chunked reader behind :func:`read_csv_columns`."""

    def __init__(self, stream: BinaryIO, shown: str, *, index: str | None, ragged: str, numbering: str,
                 max_bytes: int | None) -> None:
        self.stream = stream
        self.shown = shown
        self.index = index
        self.ragged = ragged
        self.numbering = numbering
        self.max_bytes = max_bytes
        self.header: list[str] = []
        self.parts = _Parts(0)
        self.records = 0  # CSV records read so far (the header and blank ones included)
        self.nonblank = 0  # non-blank records read so far (the header included)
        self.offset = 0  # bytes of the file consumed by the records counted above
        self.pending = b""

    # -- reading bytes

    def _read(self, size: int) -> bytes:
        data = self.stream.read(size)
        if self.max_bytes is not None and self.offset + len(self.pending) + len(data) > self.max_bytes:
            raise RunDirError(f"{self.shown}: larger than the {self.max_bytes} bytes allowed for a text file")
        return data

    # -- the header

    def read_header(self) -> list[str]:
        """The first non-blank record, read by the csv module (quotes and all)."""
        while True:
            if b"\n" not in self.pending:
                # a long header (50,000 columns, or 64 MB without a newline): only the new
                # chunk is searched and the chunks joined once -- linear, not quadratic
                chunks, held = [self.pending], len(self.pending)
                while True:
                    data = self.stream.read(64 * 1024)
                    if self.max_bytes is not None and self.offset + held + len(data) > self.max_bytes:
                        raise RunDirError(f"{self.shown}: larger than the {self.max_bytes} bytes allowed for a text file")
                    if not data:
                        break
                    chunks.append(data)
                    held += len(data)
                    if b"\n" in data:
                        break
                self.pending = b"".join(chunks)
            if not self.pending:
                raise RunDirError(f"{self.shown}: empty file (no header)")
            line_end = self.pending.find(b"\n")
            line = self.pending if line_end < 0 else self.pending[: line_end + 1]
            if b'"' in line or b"\r" in line.rstrip(b"\r\n") or b"\r" in line[:-2]:
                return self._slow_header()
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RunDirError(f"{self.shown}: not UTF-8 text (byte {self.offset + exc.start})") from None
            self.records += 1
            self.offset += len(line)
            self.pending = self.pending[len(line):]
            if text.strip("\r\n"):
                break
        self.nonblank += 1
        try:
            cells = next(csv.reader([text.rstrip("\r\n")]))
        except csv.Error as exc:
            raise RunDirError(f"{self.shown}: unreadable CSV ({exc})") from None
        self._set_header(cells)
        return self.header

    def _set_header(self, cells: list[str]) -> None:
        self.header = [h.strip() for h in cells]
        self.parts = _Parts(len(self.header))

    def _slow_header(self) -> list[str]:
        """A header with quotes or a bare ``\\r``: the whole file goes through csv."""
        self._slow = self._slow_records(self.offset)
        for record_no, nonblank_no, cells in self._slow:
            del record_no, nonblank_no
            self._set_header(cells)
            return self.header
        raise RunDirError(f"{self.shown}: empty file (no header)")

    # -- rows

    def read_rows(self) -> None:
        if getattr(self, "_slow", None) is not None:
            self._slow_rows(self._slow)
            return
        while True:
            data = self._read(CHUNK_BYTES)
            block = self.pending + data
            if not data:
                if block and not block.endswith(b"\n"):
                    block += b"\n"
                self.pending = b""
                if block and not self._fast(block):
                    self._slow_rows(self._slow_records(self.offset))
                    return
                return
            cut = block.rfind(b"\n")
            if cut < 0:
                self.pending = block
                continue
            self.pending = block[cut + 1:]
            if not self._fast(block[: cut + 1]):
                self._slow_rows(self._slow_records(self.offset))
                return

    def _fast(self, block: bytes) -> bool:
        """Convert a chunk of whole lines with numpy; False (nothing consumed) when the
        chunk holds anything but plain numbers and empty cells in well-formed rows."""
        import warnings

        import numpy as np

        size = len(block)
        if b'"' in block:
            return False
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
            if b"\r" in block:
                return False
        ncol = len(self.header)
        raw = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(raw == 10)
        starts = np.concatenate(([0], newlines[:-1] + 1))
        blank = newlines == starts
        lines = len(newlines)
        nonblank = lines - int(blank.sum())
        if ncol == 0 or nonblank == 0:
            if nonblank:
                return False
            self._count(lines, blank, size, np.empty(0, dtype=np.int64))
            return True
        if blank.any():
            keep = np.ones(len(raw), dtype=bool)
            keep[newlines[blank]] = False
            raw = raw[keep]
            block = raw.tobytes()
        ends = np.flatnonzero(raw == 10)
        commas = np.flatnonzero(raw == 44)
        if len(commas) != nonblank * (ncol - 1):
            return False
        # every line holds ncol - 1 commas: the k-th group of them lies between its newlines
        separators = np.empty((nonblank, ncol), dtype=np.int64)
        separators[:, :-1] = commas.reshape(nonblank, ncol - 1)
        separators[:, -1] = ends
        line_starts = np.concatenate(([0], ends[:-1] + 1))
        if ncol > 1 and not (np.all(separators[:, 0] >= line_starts) and np.all(separators[:, -2] < ends)):
            return False
        widths = np.diff(separators.ravel(), prepend=-1) - 1
        held = (widths > 0).reshape(nonblank, ncol)
        text = block
        if not held.all():
            # an empty cell becomes "nan" for the converter; the mask says it was empty
            if text.startswith(b","):
                text = b"nan" + text
            text = text.replace(b",,", b",nan,").replace(b",,", b",nan,")
            text = text.replace(b",\n", b",nan\n").replace(b"\n,", b"\nnan,")
        text = text.replace(b"\n", b",")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                values = np.fromstring(text, dtype=np.float64, sep=",")  # type: ignore[call-overload]
        except (ValueError, DeprecationWarning):
            return False
        if values.size != nonblank * ncol:
            return False
        values = values.reshape(nonblank, ncol)
        if self.index is not None and self.index in self.header:
            j = self.header.index(self.index)
            if not held[:, j].all() or not np.isfinite(values[:, j]).all():
                return False  # the slow path names the line
        numbers = self._count(lines, blank, size, blank)
        self.parts.add(values, held, numbers)
        return True

    def _count(self, lines: int, blank: Any, size: int, blank_rows: Any) -> Any:
        """Advance the line counters past a converted chunk; the line numbers of its rows."""
        import numpy as np

        if self.numbering == "records":
            numbers = self.records + 1 + np.arange(lines)
            numbers = numbers[~blank_rows] if len(blank_rows) else numbers
        else:
            numbers = self.nonblank + 1 + np.arange(lines - int(np.sum(blank)))
        self.records += lines
        self.nonblank += lines - int(np.sum(blank))
        self.offset += size
        return numbers

    def _slow_records(self, start: int) -> Iterator[tuple[int, int, list[str]]]:
        """(record number, non-blank number, cells) of every record from byte ``start``."""
        self.stream.seek(start)
        limit = None if self.max_bytes is None else self.max_bytes - start + 1
        data = self.stream.read() if limit is None else self.stream.read(limit)
        if self.max_bytes is not None and start + len(data) > self.max_bytes:
            raise RunDirError(f"{self.shown}: larger than the {self.max_bytes} bytes allowed for a text file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunDirError(f"{self.shown}: not UTF-8 text (byte {start + exc.start})") from None
        del data
        return self._records(text)

    def _records(self, text: str) -> Iterator[tuple[int, int, list[str]]]:
        record, nonblank = self.records, self.nonblank
        try:
            for cells in csv.reader(io.StringIO(text, newline="")):
                record += 1
                if cells == []:
                    continue
                nonblank += 1
                yield record, nonblank, cells
        except csv.Error as exc:
            raise RunDirError(f"{self.shown}: unreadable CSV ({exc})") from None

    def _slow_rows(self, records: Iterator[tuple[int, int, list[str]]]) -> None:
        """The rest of the file, cell by cell in Python, each problem one line."""
        import numpy as np

        header, shown, ncol = self.header, self.shown, len(self.header)
        values: list[list[float]] = [[] for _ in range(ncol)]
        held: list[list[bool]] = [[] for _ in range(ncol)]
        numbers: list[int] = []
        for record, nonblank, cells in records:
            line = record if self.numbering == "records" else nonblank
            if len(cells) != ncol:
                if self.ragged == "strict":
                    raise RunDirError(f"{shown} line {line}: {len(cells)} cells, header has {ncol}")
                if len(cells) > ncol:
                    raise RunDirError(f"{shown} line {line}: more cells than the header")
                cells = cells + [""] * (ncol - len(cells))
            for j, (name, cell) in enumerate(zip(header, cells)):
                if cell.strip() == "":
                    if name == self.index:
                        raise RunDirError(f"{shown} line {line}: empty '{name}' cell")
                    values[j].append(math.nan)
                    held[j].append(False)
                    continue
                bad = _bad_cell(shown, line, name, cell, self.index)
                if bad is not None:
                    raise bad
                values[j].append(float(cell.strip()))
                held[j].append(True)
            numbers.append(line)
        if numbers:
            self.parts.add(np.array(values, dtype=np.float64).T.reshape(len(numbers), ncol),
                           np.array(held, dtype=bool).T.reshape(len(numbers), ncol),
                           np.array(numbers, dtype=np.int64))
