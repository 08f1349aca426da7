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
from pytest_mlgates.rundir import Log

__all__ = ["detect", "read_scalars", "to_log"]

_PREFIX = "events.out.tfevents."
#: Event files are looked for in the folder and this many levels below it.
MAX_DEPTH = 2
#: A scalar event is a few dozen bytes; bigger records (images, histograms) are skipped
#: unparsed, so a 2 GB image log costs no memory and no pure-Python checksum time.
_MAX_PARSED_RECORD = 1024 * 1024


# --------------------------------------------------------------------------- files


def _event_files(path: Path) -> Iterator[Path]:
    """Event files under ``path`` (depth <= MAX_DEPTH), sorted per folder; symlinked folders
    are not entered, so a link loop or a link out of the run costs nothing."""
    stack: list[tuple[Path, int]] = [(path, 0)]
    while stack:
        folder, depth = stack.pop(0)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.name.startswith(_PREFIX) and entry.is_file():
                    yield Path(entry.path)
                elif depth < MAX_DEPTH and not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), depth + 1))
            except OSError:
                continue


def detect(path: Path) -> bool:
    """Cheap: stops at the first event file."""
    return next(_event_files(Path(path)), None) is not None


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


def _records(file: Path) -> Iterator[tuple[int, bytes | None]]:
    """``(offset, payload)`` of every record; payload None for records too big to be scalars."""
    try:
        fh = open(file, "rb")  # noqa: SIM115 - the `with fh:` below closes it
    except OSError as exc:
        raise RunDirError(f"{file}: cannot read ({exc.strerror or exc})") from None
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
        for offset, data in _records(file):
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
    return Log(columns=columns, source=path, empty=empty, kind="tensorboard")
