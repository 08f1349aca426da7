"""``torch.save``'s file format, written without importing torch (for the writer process).

The engine's writer process (:mod:`model.writer`) must stay small: a second process that
imports torch holds ~140 MiB of its own memory, one forked from the engine holds a growing
copy of every page the engine touches after the fork. So it writes the checkpoint file
itself, in the format ``torch.save`` writes (zip, ``archive/data.pkl`` pickled with
protocol 2, one ``archive/data/<key>`` record per storage, 64-byte aligned, the
``version``/``byteorder`` records), and ``data.pkl`` is byte for byte what ``torch.save``
pickles for the same dict (tests/test_writer.py compares them). It is read like any
checkpoint, with ``torch.load(path, weights_only=True)``.

What it takes: a *skeleton* -- the checkpoint dict with each tensor replaced by a
:class:`TensorRef` (which storage, dtype, offset, size, stride) -- and each storage's
bytes. Only the dtypes whose ``torch.save`` form is ``_rebuild_tensor_v2`` over a typed
storage are covered (:data:`STORAGE_TYPES`); the engine sends anything else already
serialized.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
import zipfile
import zlib
from typing import Any

# dtype (torch's name without "torch.") -> (storage class in torch's pickles, item size)
STORAGE_TYPES: dict[str, tuple[str, int]] = {
    "float32": ("FloatStorage", 4), "float64": ("DoubleStorage", 8),
    "float16": ("HalfStorage", 2), "bfloat16": ("BFloat16Storage", 2),
    "int64": ("LongStorage", 8), "int32": ("IntStorage", 4), "int16": ("ShortStorage", 2),
    "int8": ("CharStorage", 1), "uint8": ("ByteStorage", 1), "bool": ("BoolStorage", 1),
}
ALIGNMENT = 64  # torch's default storage alignment in the zip
PROTOCOL = 2  # torch.serialization.DEFAULT_PROTOCOL
ARCHIVE = "archive"  # torch.save's record prefix when it writes to a buffer


class TensorRef:
    """A tensor in a skeleton: its storage's bytes (at `raw`, `nbytes` long, in the stream
    sent with the skeleton), and its dtype, storage offset, size, stride and device."""

    __slots__ = ("device", "dtype", "nbytes", "offset", "raw", "requires_grad", "size",
                 "stride")

    def __init__(self, raw: int, nbytes: int, dtype: str, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...], requires_grad: bool, device: str) -> None:
        self.raw, self.nbytes, self.dtype, self.offset = raw, nbytes, dtype, offset
        self.size, self.stride = size, stride
        self.requires_grad, self.device = requires_grad, device

    def __reduce__(self) -> tuple[Any, ...]:
        return (TensorRef, (self.raw, self.nbytes, self.dtype, self.offset, self.size,
                            self.stride, self.requires_grad, self.device))


def _torch_globals() -> tuple[Any, dict[str, Any]]:
    """``torch._utils._rebuild_tensor_v2`` and the storage classes, for GLOBAL opcodes.

    In a process that has imported torch these are torch's own; in the writer process
    (no torch) they are stand-ins registered as modules ``torch`` and ``torch._utils``, so
    the C pickler writes the same ``GLOBAL 'torch FloatStorage'`` opcodes torch does.
    """
    if "torch" in sys.modules and not getattr(sys.modules["torch"], "_model_stand_in", False):
        import torch

        return torch._utils._rebuild_tensor_v2, {
            name: getattr(torch, name) for name, _ in STORAGE_TYPES.values()}
    fake = sys.modules.get("torch")
    if fake is None:
        fake = types.ModuleType("torch")
        fake._model_stand_in = True  # type: ignore[attr-defined]
        utils = types.ModuleType("torch._utils")

        def _rebuild_tensor_v2(*args: Any) -> Any:  # never called: only its name is pickled
            raise RuntimeError("stand-in for torch._utils._rebuild_tensor_v2")

        _rebuild_tensor_v2.__module__ = "torch._utils"
        _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
        utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
        fake._utils = utils  # type: ignore[attr-defined]
        for name, _ in STORAGE_TYPES.values():
            setattr(fake, name, type(name, (), {"__module__": "torch"}))
        sys.modules["torch"], sys.modules["torch._utils"] = fake, utils
    return fake._utils._rebuild_tensor_v2, {  # type: ignore[attr-defined]
        name: getattr(fake, name) for name, _ in STORAGE_TYPES.values()}


class _Storage:
    """Stands for one storage in the pickle; pickled as its persistent id, as torch does
    (a fresh id tuple each time, so a shared storage's id is pickled again, not memoized)."""

    __slots__ = ("pid",)

    def __init__(self, pid: list[Any]) -> None:
        self.pid = pid


class _Pickler(pickle.Pickler):
    """torch.save's pickler for a skeleton: each :class:`TensorRef` is pickled as the
    ``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())``
    torch writes for a tensor, each storage as its persistent id, in one C pass.

    ``reducer_override`` is called only for objects that are not builtins, so dicts, lists
    and numbers cost no Python; a TensorRef met twice is one memoized object, as torch's
    pickler memoizes a tensor it meets twice. Storages get their numbers in the order the
    pickle first meets them, as in torch.save.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._rebuild, self._classes = _torch_globals()
        self._storages: dict[tuple[int, int], _Storage] = {}
        self._dtypes: dict[tuple[int, int], str] = {}
        self.order: list[tuple[int, int]] = []

    def persistent_id(self, obj: Any) -> Any:
        return tuple(obj.pid) if type(obj) is _Storage else None

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not TensorRef:
            return NotImplemented
        if obj.dtype not in STORAGE_TYPES:
            raise ValueError(f"dtype {obj.dtype} is not written by model.torchfile")
        key = (obj.raw, obj.nbytes)
        storage = self._storages.get(key)
        if storage is None:
            class_name, item_size = STORAGE_TYPES[obj.dtype]
            location = _CPU if obj.device == "cpu" else obj.device
            storage = self._storages[key] = _Storage(
                [_STORAGE, self._classes[class_name], str(len(self.order)), location,
                 obj.nbytes // item_size])
            self._dtypes[key] = obj.dtype
            self.order.append(key)
        elif self._dtypes[key] != obj.dtype:
            raise ValueError("two tensors view one storage as different dtypes")
        return (self._rebuild, (storage, obj.offset, obj.size, obj.stride, obj.requires_grad,
                                collections.OrderedDict()))


_STORAGE, _CPU = "storage", "cpu"  # one object each, memoized in the pickle as torch's are


def serialize(skeleton: Any, raw: Any) -> bytes:
    """The bytes ``torch.save`` would write for `skeleton` with its tensors put back."""
    return b"".join(serialize_parts(skeleton, raw))


def serialize_parts(skeleton: Any, raw: Any) -> list[Any]:
    """:func:`serialize` as the archive's parts, in order: headers, and views into `raw`
    for the storages -- written with ``writev``, a model-sized checkpoint costs the writer
    no second copy of its bytes.

    Each :class:`TensorRef` names its storage's bytes in `raw`; refs naming the same bytes
    share one storage, as the tensors did. Raises ``ValueError`` for a dtype outside
    :data:`STORAGE_TYPES` or two dtypes over one storage (torch refuses that too).
    """
    view = memoryview(raw).cast("B")
    pickled = io.BytesIO()
    pickler = _Pickler(pickled)
    pickler.dump(skeleton)
    order = pickler.order

    records: list[tuple[str, Any]] = [
        ("data.pkl", pickled.getbuffer()), (".format_version", b"1"),
        (".storage_alignment", str(ALIGNMENT).encode()), ("byteorder", sys.byteorder.encode())]
    for number, (offset, nbytes) in enumerate(order):
        records.append((f"data/{number}", view[offset:offset + nbytes] if nbytes else b""))
    records.append(("version", b"3\n"))
    checksum = 0
    for _, data in records:
        checksum = zlib.crc32(data, checksum)
    records.append((".data/serialization_id", f"{checksum:040d}".encode()))
    return _zip_parts(records)


_LOCAL = struct.Struct("<4s2B4HL2L2H")  # zip local file header (zipfile.structFileHeader)
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory entry (structCentralDir)
_END = struct.Struct("<4s4H2LH")  # end of central directory (structEndArchive)
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory (structEndArchive64)
_LOCATOR64 = struct.Struct("<4sLQL")  # zip64 end locator (structEndArchive64Locator)
_DOS_DATE, _DOS_TIME = (1980 - 1980) << 9 | 1 << 5 | 1, 0  # 1980-01-01 00:00:00
_VERSION, _VERSION64, _SYSTEM, _MODE = 20, 45, 3, 0o600 << 16  # as zipfile writes on POSIX


def _zip_parts(records: list[tuple[str, Any]]) -> list[Any]:
    """A stored (uncompressed) zip whose every record's data starts 64-byte aligned, as its
    parts: the records' data as given (views, not copies), between packed headers.

    Byte for byte what ``zipfile`` writes for these records with ``writestr`` (including
    its zip64 fields past ``zipfile.ZIP64_LIMIT`` bytes or ``ZIP_FILECOUNT_LIMIT``
    records, read at call time; tests/test_writer.py compares the two), packed with
    ``struct``: zipfile spends ~20 µs of Python per record, most of a save in the writer
    process, and builds the archive in one buffer -- a second copy of a model-sized
    checkpoint.
    """
    limit, count_limit = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    parts: list[Any] = []
    central: list[bytes] = []
    offset = 0
    for name, data in records:
        filename = f"{ARCHIVE}/{name}".encode("ascii")
        size = len(data)
        # zipfile decides a record's local header before writing it, with a margin: past
        # limit / 1.05 bytes the sizes go in a zip64 field and the header shows 0xFFFFFFFF.
        # The central entry has the true sizes and offset, and widens only what overflows.
        zip64 = size * 1.05 > limit
        start = offset + 30 + len(filename) + (20 if zip64 else 0) + 4  # after the headers
        pad = -start % ALIGNMENT
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        local_extra = extra + struct.pack("<HHQQ", 1, 16, size, size) if zip64 else extra
        version = _VERSION64 if zip64 else _VERSION
        crc, local_size = zlib.crc32(data), 0xFFFFFFFF if zip64 else size
        parts += [_LOCAL.pack(b"PK\003\004", version, 0, 0, zipfile.ZIP_STORED, _DOS_TIME,
                              _DOS_DATE, crc, local_size, local_size, len(filename),
                              len(local_extra)),
                  filename, local_extra, data]
        wide = [size, size] if size > limit else []  # the central entry's zip64 field
        if offset > limit:
            wide.append(offset)
        central_extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) + extra \
            if wide else extra
        central_version = max(_VERSION64 if wide else 0, version)
        central_size = 0xFFFFFFFF if size > limit else size
        central.append(_CENTRAL.pack(
            b"PK\001\002", central_version, _SYSTEM, central_version, 0, 0, zipfile.ZIP_STORED,
            _DOS_TIME, _DOS_DATE, crc, central_size, central_size, len(filename),
            len(central_extra), 0, 0, 0, _MODE, 0xFFFFFFFF if offset > limit else offset)
            + filename + central_extra)
        offset += 30 + len(filename) + len(local_extra) + size
    directory = b"".join(central)
    count, directory_size, directory_offset = len(records), len(directory), offset
    parts.append(directory)
    if count > count_limit or directory_offset > limit or directory_size > limit:
        parts += [_END64.pack(b"PK\006\006", 44, 45, 45, 0, 0, count, count, directory_size,
                              directory_offset),
                  _LOCATOR64.pack(b"PK\006\007", 0, directory_offset + directory_size, 1)]
        count = min(count, 0xFFFF)
        directory_size = min(directory_size, 0xFFFFFFFF)
        directory_offset = min(directory_offset, 0xFFFFFFFF)
    parts.append(_END.pack(b"PK\005\006", 0, 0, count, count, directory_size,
                           directory_offset, 0))
    return parts
