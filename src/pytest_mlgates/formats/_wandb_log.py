"""The W&B record log (``run-<id>.wandb``), read and written without the ``wandb`` or
``protobuf`` packages: its LevelDB-style framing and the few ``Record`` protobuf fields the
``wandb`` run format needs (see :mod:`pytest_mlgates.formats.wandb`)."""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError

__all__ = ["WandbFile", "read_records", "read_wandb_file", "write_records"]

HEADER = struct.Struct("<4sHB")
IDENT, MAGIC, VERSION = b":W&B", 0xBEE1, 0
BLOCK = 32768
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
#: A .wandb file larger than this, or with more records, is refused rather than read.
MAX_FILE_BYTES = 4 * 1024 ** 3
MAX_RECORDS = 20_000_000
MAX_RECORD_BYTES = 64 * 1024 * 1024
_CRC_OF_TYPE = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}

# Record protobuf field numbers (wandb/proto/wandb_internal.proto)
_REC_HISTORY, _REC_CONFIG, _REC_RUN, _REC_EXIT = 2, 5, 17, 18
_RUN_CONFIG = 4
_HIST_ITEM, _HIST_STEP = 1, 2
_ITEM_KEY, _ITEM_NESTED, _ITEM_BOOL, _ITEM_INT, _ITEM_NUMBER, _ITEM_JSON = 1, 2, 4, 5, 6, 16
_CFG_UPDATE = 1
_EXIT_CODE = 1


# --------------------------------------------------------------------------- the record log


def read_records(path: Path, shown: str, *, root: Path | None = None) -> tuple[list[bytes], bool]:
    """(every complete record's data, whether the file ends cut off mid-record).

    Reads block by block; a record split over blocks (FIRST, MIDDLE..., LAST) is joined.
    A bad header, a wrong checksum, an impossible type or length in a complete record are
    one-line RunDirErrors naming the byte offset; a file that ends inside a record (a run
    still being written) is not an error.  The file is opened as every run-dir file is
    (``runfiles.open_run_file``: inside ``root``, by default its own folder; a regular
    file; never a wait)."""
    import os

    from pytest_mlgates.runfiles import open_run_file

    records: list[bytes] = []
    parts: list[bytes] = []
    cut = False
    with open_run_file(root if root is not None else path.parent, path, shown) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise RunDirError(f"{shown}: {size} bytes, larger than the {MAX_FILE_BYTES} allowed")
        head = fh.read(HEADER.size)
        if len(head) < HEADER.size:
            raise RunDirError(f"{shown}: {len(head)} bytes, too short for a W&B record log header")
        ident, magic, version = HEADER.unpack(head)
        if ident != IDENT or magic != MAGIC:
            raise RunDirError(f"{shown}: not a W&B record log (header {head[:6]!r}, expected ':W&B' and magic 0xBEE1)")
        if version != VERSION:
            raise RunDirError(f"{shown}: W&B record log version {version}, only version {VERSION} is read")
        offset = HEADER.size
        block_left = BLOCK - HEADER.size
        while True:
            if block_left < RECORD_HEADER.size:  # the block's zero trailer
                fh.read(block_left)
                offset += block_left
                block_left = BLOCK
            raw = fh.read(RECORD_HEADER.size)
            if not raw:
                break
            if len(raw) < RECORD_HEADER.size:
                cut = True
                break
            crc, length, kind = RECORD_HEADER.unpack(raw)
            if crc == 0 and length == 0 and kind == 0:  # zero padding at the end
                rest = fh.read(block_left - RECORD_HEADER.size)
                if rest.strip(b"\0"):
                    raise RunDirError(f"{shown}: corrupt record log (data after zero padding at byte {offset})")
                offset += block_left
                block_left = BLOCK
                continue
            if kind not in _CRC_OF_TYPE or length > block_left - RECORD_HEADER.size:
                raise RunDirError(f"{shown}: corrupt record log (record at byte {offset}: type {kind}, length {length})")
            data = fh.read(length)
            if len(data) < length:
                cut = True
                break
            if zlib.crc32(data, _CRC_OF_TYPE[kind]) & 0xFFFFFFFF != crc:
                raise RunDirError(f"{shown}: corrupt record log (checksum mismatch in the record at byte {offset})")
            offset += RECORD_HEADER.size + length
            block_left -= RECORD_HEADER.size + length
            if kind == FULL:
                if parts:
                    raise RunDirError(f"{shown}: corrupt record log (a FULL record inside a split one at byte {offset})")
                records.append(data)
            elif kind == FIRST:
                parts = [data]
            else:
                if not parts:
                    raise RunDirError(f"{shown}: corrupt record log (a {'MIDDLE' if kind == MIDDLE else 'LAST'} "
                                      f"record without its FIRST before byte {offset})")
                parts.append(data)
                if sum(map(len, parts)) > MAX_RECORD_BYTES:
                    raise RunDirError(f"{shown}: a record larger than {MAX_RECORD_BYTES} bytes")
                if kind == LAST:
                    records.append(b"".join(parts))
                    parts = []
            if len(records) > MAX_RECORDS:
                raise RunDirError(f"{shown}: more than {MAX_RECORDS} records")
    return records, cut or bool(parts)


# --------------------------------------------------------------------------- protobuf


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes for
    length-delimited fields, raw 8/4 bytes for fixed ones. Groups are refused."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value


def _json_number(text: str) -> float | None:
    try:
        value = json.loads(text)  # W&B writes NaN, Infinity, -Infinity as such
    except (ValueError, RecursionError):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _item(buf: bytes) -> tuple[str, float | None]:
    """(key, numeric value or None) of a HistoryItem."""
    key, nested, value = "", [], None
    for number, wire, raw in _fields(buf):
        if number == _ITEM_KEY and wire == 2:
            key = raw.decode("utf-8", "replace")
        elif number == _ITEM_NESTED and wire == 2:
            nested.append(raw.decode("utf-8", "replace"))
        elif number == _ITEM_JSON and wire == 2:
            value = _json_number(raw.decode("utf-8", "replace"))
        elif number == _ITEM_NUMBER and wire == 1:
            value = struct.unpack("<d", raw)[0]
        elif number == _ITEM_INT and wire == 0:
            value = float((raw >> 1) ^ -(raw & 1))  # sint64: zigzag
    return (".".join(nested) if nested else key), value


def _config_items(buf: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, raw in _fields(buf):
        if number != _CFG_UPDATE or wire != 2:
            continue
        key, nested, text = "", [], None
        for n, w, r in _fields(raw):
            if n == 1 and w == 2:
                key = r.decode("utf-8", "replace")
            elif n == 2 and w == 2:
                nested.append(r.decode("utf-8", "replace"))
            elif n == 16 and w == 2:
                text = r.decode("utf-8", "replace")
        name = ".".join(nested) if nested else key
        if name and text is not None:
            try:
                out[name] = json.loads(text)
            except (ValueError, RecursionError):
                out[name] = text
    return out


@dataclass
class WandbFile:
    """What a ``.wandb`` record log says: history rows by step, config, how it ended."""

    rows: dict[int, dict[str, float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    cut: bool = False


def read_wandb_file(path: Path, shown: str, *, root: Path | None = None) -> WandbFile:
    """The history, config and exit of a ``run-<id>.wandb`` file (see the module docstring)."""
    records, cut = read_records(path, shown, root=root)
    out = WandbFile(cut=cut)
    next_step = 0
    for index, data in enumerate(records):
        try:
            for number, wire, raw in _fields(data):
                if wire != 2:
                    continue
                if number == _REC_HISTORY:
                    values: dict[str, float] = {}
                    step: int | None = None
                    for n, w, r in _fields(raw):
                        if n == _HIST_ITEM and w == 2:
                            key, value = _item(r)
                            if key == "_step" and value is not None and math.isfinite(value):
                                step = int(value)
                            elif key and not key.startswith("_") and value is not None:
                                values[key] = value
                        elif n == _HIST_STEP and w == 2:
                            for n2, w2, r2 in _fields(r):
                                if n2 == 1 and w2 == 0:
                                    step = int(r2)
                    step = next_step if step is None else step
                    out.rows.setdefault(step, {}).update(values)  # a step logged twice: later values win
                    next_step = step + 1
                elif number == _REC_CONFIG:
                    out.config.update(_config_items(raw))
                elif number == _REC_RUN:  # RunRecord.config: the config wandb.init was given
                    for n, w, r in _fields(raw):
                        if n == _RUN_CONFIG and w == 2:
                            out.config.update(_config_items(r))
                elif number == _REC_EXIT:
                    code = 0
                    for n, w, r in _fields(raw):
                        if n == _EXIT_CODE and w == 0:
                            code = r - (1 << 32) if r >= 1 << 31 else r
                    out.exit_code = code
        except (ValueError, struct.error, IndexError):
            raise RunDirError(f"{shown}: record {index} is not a W&B Record protobuf (corrupt record log)") from None
    return out



# --------------------------------------------------------------------------- writing

def _raw_fields(buf: bytes) -> list[tuple[int, int, bytes]]:
    """(field number, wire type, the field's bytes, key included) of a protobuf message:
    a message is the concatenation of these, so one field can be replaced and the rest kept."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        out.append((number, wire, buf[start:pos]))
    return out


def _payload(field_bytes: bytes) -> bytes:
    """The payload of one length-delimited field's bytes."""
    _, pos = _varint(field_bytes, 0)
    size, pos = _varint(field_bytes, pos)
    return field_bytes[pos:pos + size]


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def write_records(path: Path, records: list[bytes]) -> None:
    """A W&B record log of ``records``, framed as W&B frames it (used by ``mlgates prove``
    and the tests' fixtures)."""
    out = bytearray(HEADER.pack(IDENT, MAGIC, VERSION))
    block_left = BLOCK - HEADER.size
    for data in records:
        first = True
        while True:
            if block_left < RECORD_HEADER.size:
                out += b"\0" * block_left
                block_left = BLOCK
            room = block_left - RECORD_HEADER.size
            chunk, data = data[:room], data[room:]
            if first:
                kind = FULL if not data else FIRST
            else:
                kind = LAST if not data else MIDDLE
            crc = zlib.crc32(chunk, _CRC_OF_TYPE[kind]) & 0xFFFFFFFF
            out += RECORD_HEADER.pack(crc, len(chunk), kind) + chunk
            block_left -= RECORD_HEADER.size + len(chunk)
            first = False
            if not data:
                break
    path.write_bytes(bytes(out))
