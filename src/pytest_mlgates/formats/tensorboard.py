"""TensorBoard event files (``events.out.tfevents.*``) read as a per-step log, without TensorFlow.

Why not ``EventAccumulator``: it keeps a reservoir sample (1000 scalars per tag by default)
and silently stops at a truncated or corrupt record, so a gate could pass on a run it never
fully read. Here the TFRecord framing (length, masked CRC-32C, payload, masked CRC-32C) is
checked record by record and any damage is one :class:`RunDirError` naming the file and the
byte offset; only the ``Event`` protobuf class comes from the ``tensorboard`` package.

Scalars come in two encodings: ``simple_value`` (torch's SummaryWriter, TF1) and a 0-d tensor
whose tag's first event carries the ``scalars`` plugin metadata (tf.summary v2). Both read.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats.engine import EngineRun
from pytest_mlgates.rundir import default_mode
from pytest_mlgates.runfiles import open_run_file
from pytest_mlgates.runlog import Log
from pytest_mlgates.runlog_regroup import regroup_steps

__all__ = ["IDENTIFIED_BY", "Mutations", "TensorBoardRun", "detect", "read", "read_scalars", "to_log",
           "tracked_from_files"]

_PREFIX = "events.out.tfevents."
#: Event files are looked for in the folder and this many levels below it.
MAX_DEPTH = 2
#: A scalar event is a few dozen bytes; bigger records (images, histograms) are skipped
#: unparsed, so a 2 GB image log costs no memory and no pure-Python checksum time.
_MAX_PARSED_RECORD = 1024 * 1024


# --------------------------------------------------------------------------- files


def _event_files(path: Path) -> Iterator[Path]:
    """Event files under ``path`` (depth <= MAX_DEPTH), sorted per folder; symlinked folders
    are not entered, so a link loop or a link out of the run costs nothing.  An event file
    that is a link or a FIFO is listed too: reading it refuses it by name."""
    stack: list[tuple[Path, int]] = [(path, 0)]
    while stack:
        folder, depth = stack.pop(0)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.name.startswith(_PREFIX) and not entry.is_dir(follow_symlinks=False):
                    yield Path(entry.path)
                elif depth < MAX_DEPTH and not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), depth + 1))
            except OSError:
                continue


IDENTIFIED_BY = "events.out.tfevents.* (in the folder or two levels below)"


def detect(path: Path) -> list[str]:
    """Cheap: stops at the first event file."""
    first = next(_event_files(Path(path)), None)
    if first is None:
        return []
    try:
        return [str(first.relative_to(path))]
    except ValueError:
        return [first.name]


# --------------------------------------------------------------------------- TFRecord framing

_CRC_TABLE: list[int] = []


def _crc32c(data: bytes) -> int:
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(file: Path, root: Path | None = None) -> Iterator[tuple[int, bytes | None]]:
    """``(offset, payload)`` of every record; payload None for records too big to be scalars.
    ``file`` must be a regular file inside ``root`` (the run dir; by default its folder)."""
    fh = open_run_file(root if root is not None else file.parent, file, str(file))
    with fh:
        offset = 0
        while True:
            header = fh.read(12)
            if not header:
                return
            if len(header) < 12:
                raise RunDirError(f"{file}: truncated event file (record header at byte {offset} is cut short)")
            (length,) = struct.unpack("<Q", header[:8])
            (length_crc,) = struct.unpack("<I", header[8:])
            if _masked_crc(header[:8]) != length_crc:
                raise RunDirError(f"{file}: corrupt event file (bad record length checksum at byte {offset})")
            remaining = os.fstat(fh.fileno()).st_size - offset - 12
            if length + 4 > remaining:
                raise RunDirError(
                    f"{file}: truncated event file (record at byte {offset} needs {length + 4} bytes, {remaining} left)"
                )
            if length > _MAX_PARSED_RECORD:
                fh.seek(length + 4, os.SEEK_CUR)
                yield offset, None
            else:
                data = fh.read(length)
                footer = fh.read(4)
                if len(data) < length or len(footer) < 4:
                    raise RunDirError(f"{file}: truncated event file (record at byte {offset} is cut short)")
                if struct.unpack("<I", footer)[0] != _masked_crc(data):
                    raise RunDirError(f"{file}: corrupt event file (checksum mismatch in the record at byte {offset})")
                yield offset, data
            offset += 12 + length + 4


# --------------------------------------------------------------------------- scalars

# TensorProto dtype -> (struct format for tensor_content, repeated field for small tensors)
_DTYPES = {1: ("<f", "float_val"), 2: ("<d", "double_val"), 3: ("<i", "int_val"), 9: ("<q", "int64_val")}


def _tensor_value(tensor: Any) -> float | None:
    """The number in a one-element numeric tensor; None for anything else (strings, arrays)."""
    if any(d.size != 1 for d in tensor.tensor_shape.dim):
        return None
    if tensor.dtype == 19:  # DT_HALF: half_val holds the raw 16 bits
        raw = bytes(tensor.tensor_content) or (struct.pack("<H", tensor.half_val[0]) if tensor.half_val else b"")
        return float(struct.unpack("<e", raw)[0]) if len(raw) == 2 else None
    spec = _DTYPES.get(tensor.dtype)
    if spec is None:
        return None
    fmt, field = spec
    if tensor.tensor_content:
        content = bytes(tensor.tensor_content)
        if len(content) != struct.calcsize(fmt):
            return None
        return float(struct.unpack(fmt, content)[0])
    values = getattr(tensor, field)
    return float(values[0]) if len(values) == 1 else None


def _load_event_class(path: Path) -> Any:
    try:
        from tensorboard.compat.proto import event_pb2
    except ImportError:
        raise RunDirError(
            f"{path}: TensorBoard event files found but the 'tensorboard' package is not installed "
            "(pip install tensorboard)"
        ) from None
    return event_pb2.Event


def read_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] sorted by step, every point of every event file under ``path``.

    A (tag, step) written more than once (a resumed run's second file) keeps the value with
    the latest wall time. A tag logged in several folders (``add_scalars`` writes one folder
    per series) is named ``<folder>/<tag>`` outside the top folder, so the series stay apart.
    """
    path = Path(path)
    files = list(_event_files(path))
    if not files:
        raise RunDirError(f"{path}: no TensorBoard event files (events.out.tfevents.*)")
    event_cls = _load_event_class(path)
    from google.protobuf.message import DecodeError  # tensorboard depends on protobuf

    # (folder, tag) -> step -> (wall_time, order, value)
    points: dict[tuple[str, str], dict[int, tuple[float, int, float]]] = {}
    plugin: dict[tuple[str, str], str] = {}
    order = 0
    for file in files:
        folder = file.parent.relative_to(path).as_posix()
        for offset, data in _records(file, path):
            if data is None:
                continue
            try:
                event = event_cls.FromString(data)
            except (DecodeError, ValueError, RuntimeError):
                raise RunDirError(f"{file}: not a TensorBoard event record at byte {offset}") from None
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                key = (folder, value.tag)
                if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                    plugin[key] = value.metadata.plugin_data.plugin_name
                kind = value.WhichOneof("value")
                number: float | None = None
                if kind == "simple_value":
                    number = float(value.simple_value)
                elif kind == "tensor" and plugin.get(key) == "scalars":
                    number = _tensor_value(value.tensor)
                if number is None:
                    continue
                order += 1
                seen = points.setdefault(key, {})
                old = seen.get(event.step)
                if old is None or (event.wall_time, order) >= (old[0], old[1]):
                    seen[event.step] = (event.wall_time, order, number)
    folders_of: dict[str, set[str]] = {}
    for folder, tag in points:
        folders_of.setdefault(tag, set()).add(folder)
    out: dict[str, list[tuple[int, float]]] = {}
    for (folder, tag), by_step in sorted(points.items()):
        name = tag if len(folders_of[tag]) == 1 or folder == "." else f"{folder}/{tag}"
        merged = dict(out.get(name, []))
        merged.update({step: v[2] for step, v in by_step.items()})
        out[name] = sorted(merged.items())
    return out


def to_log(path: Path) -> Log:
    """One row per step (epoch = step), a column per scalar tag; a step a tag skipped is NaN
    and listed in ``Log.empty``."""
    path = Path(path)
    scalars = read_scalars(path)
    if not scalars:
        raise RunDirError(f"{path}: TensorBoard event files hold no scalars")
    steps = sorted({s for pts in scalars.values() for s, _ in pts})
    columns: dict[str, list[float]] = {"epoch": [float(s) for s in steps]}
    empty: dict[str, list[int]] = {}
    for tag, pts in scalars.items():
        name = "logged_epoch" if tag == "epoch" else tag  # a logged "epoch" must not hide the step
        by_step = dict(pts)
        columns[name] = [by_step.get(s, math.nan) for s in steps]
        missing = [s for s in steps if s not in by_step]
        if missing:
            empty[name] = missing
    return Log(columns=columns, source=path, empty=empty, kind="tensorboard", first_epoch=0 if steps[0] == 0 else 1)


# --------------------------------------------------------------------------- the reader

_CKPT_SUFFIXES = (".pt", ".pth")


def tracked_from_files(folder: Path) -> list[tuple[str, str]]:
    """(metric, mode) of every ``checkpoints/best_<metric>.pt`` in ``folder``: a run that
    saves its best checkpoints the engine's way, with no config naming them."""
    try:
        names = sorted(p.name for p in (folder / "checkpoints").iterdir())
    except OSError:
        return []
    out = []
    for name in names:
        stem, dot, suffix = name.rpartition(".")
        if dot and f".{suffix}" in _CKPT_SUFFIXES and stem.startswith("best_") and len(stem) > 5:
            out.append((stem[5:], default_mode(stem[5:])))
    return out


class TensorBoardRun(EngineRun):
    """TensorBoard event files as the log; checkpoints the engine's way beside them
    (``checkpoints/best_<metric>.pt``)."""

    format = "tensorboard"

    def _read_log(self) -> Log:
        return regroup_steps(to_log(self.path))

    def metric_history(self) -> Log | None:
        return None

    @property
    def tracked(self) -> list[tuple[str, str]]:
        return tracked_from_files(self.path)


# --------------------------------------------------------------------------- prove


class EventLogEditor(m.LogEditor):
    """The scalars of a copy's event files, cell by cell: a cell is one ``simple_value``
    point (a tag at a step), in step order.  Changed records are re-serialized and framed
    again with their CRCs; every other record is written back byte for byte."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.files = list(_event_files(run))
        if not self.files:
            raise m.MutationError("no event files in the run")
        self.event_cls = _load_event_class(run)
        self.raw: dict[Path, bytes] = {}
        self.records: dict[Path, list[tuple[int, int, Any]]] = {}  # (offset, length, Event or None)
        self.changed: set[tuple[Path, int]] = set()
        self.removed: set[tuple[Path, int, int]] = set()
        points: dict[tuple[str, str], list[tuple[int, float, Path, int, int]]] = {}
        for file in self.files:
            data = file.read_bytes()
            self.raw[file] = data
            folder = file.parent.relative_to(run).as_posix()
            records: list[tuple[int, int, Any]] = []
            for index, (offset, payload) in enumerate(_records(file)):
                (length,) = struct.unpack("<Q", data[offset:offset + 8])
                event = self.event_cls.FromString(payload) if payload is not None else None
                records.append((offset, length, event))
                if event is None or not event.HasField("summary"):
                    continue
                for j, value in enumerate(event.summary.value):
                    if value.WhichOneof("value") == "simple_value":
                        points.setdefault((folder, value.tag), []).append(
                            (event.step, event.wall_time, file, index, j))
            self.records[file] = records
        folders_of: dict[str, set[str]] = {}
        for folder, tag in points:
            folders_of.setdefault(tag, set()).add(folder)
        self.cells_of: dict[str, list[tuple[int, float, Path, int, int]]] = {}
        for (folder, tag), pts in sorted(points.items()):
            name = tag if len(folders_of[tag]) == 1 or folder == "." else f"{folder}/{tag}"
            name = "logged_epoch" if name == "epoch" else name
            self.cells_of.setdefault(name, []).extend(pts)
        for pts in self.cells_of.values():
            pts.sort(key=lambda p: (p[0], p[1]))

    def columns(self) -> list[str]:
        return list(self.cells_of)

    def cells(self, column: str) -> list[Any]:
        return list(range(len(self.cells_of.get(column, []))))

    def _value(self, column: str, handle: Any) -> tuple[Any, tuple[Path, int, int]]:
        _step, _wall, file, index, j = self.cells_of[column][handle]
        return self.records[file][index][2].summary.value[j], (file, index, j)

    def get(self, column: str, handle: Any) -> float:
        return float(self._value(column, handle)[0].simple_value)

    def set(self, column: str, handle: Any, value: float) -> None:
        proto, (file, index, _j) = self._value(column, handle)
        proto.simple_value = value
        self.changed.add((file, index))

    def blank(self, column: str, handle: Any) -> None:
        _proto, (file, index, j) = self._value(column, handle)
        self.removed.add((file, index, j))
        self.changed.add((file, index))

    def save(self) -> None:
        for file in self.files:
            if not any(f == file for f, _ in self.changed):
                continue
            data = self.raw[file]
            out = bytearray()
            for index, (offset, length, event) in enumerate(self.records[file]):
                if (file, index) not in self.changed:
                    out += data[offset:offset + 12 + length + 4]
                    continue
                kept = [v for j, v in enumerate(event.summary.value) if (file, index, j) not in self.removed]
                del event.summary.value[:]
                event.summary.value.extend(kept)
                payload = event.SerializeToString()
                header = struct.pack("<Q", len(payload))
                out += header + struct.pack("<I", _masked_crc(header)) + payload + struct.pack("<I", _masked_crc(payload))
            file.write_bytes(bytes(out))


class Mutations(m.Mutations):
    """TensorBoard event files as the log (torch's SummaryWriter scalars); checkpoints the
    engine's way beside them."""

    log_name = "the event files"

    def open_log(self, run: Path) -> m.LogEditor:
        return EventLogEditor(run)


#: the reader: the run class itself
read = TensorBoardRun
