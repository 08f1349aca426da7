"""``torch.save``'s file format, written without importing torch (for the writer process).

The engine's writer process (:mod:`model.writer`) must stay small: a second process that
imports torch holds ~140 MiB of its own memory, one forked from the engine holds a growing
copy of every page the engine touches after the fork. So it writes the checkpoint file
itself, in the format ``torch.save`` writes (zip, ``archive/data.pkl`` pickled with
protocol 2, one ``archive/data/<key>`` record per storage, 64-byte aligned, the
``version``/``byteorder`` records), and ``data.pkl`` is byte for byte what ``torch.save``
pickles for the same dict (tests/test_writer.py compares them). ``torch.load(...,
weights_only=True)`` reads it like any checkpoint.

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


class _Rebuild:
    """A tensor in the pickle: ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    __slots__ = ("args", "func")

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return tuple(obj.pid) if type(obj) is _Storage else None


def serialize(skeleton: Any, raw: Any) -> bytes:
    """The bytes ``torch.save`` would write for `skeleton` with its tensors put back.

    Each :class:`TensorRef` names its storage's bytes in `raw`; refs naming the same bytes
    share one storage, as the tensors did. Raises ``ValueError`` for a dtype outside
    :data:`STORAGE_TYPES` or two dtypes over one storage (torch refuses that too).
    """
    rebuild, classes = _torch_globals()
    view = memoryview(raw).cast("B")
    storages: dict[tuple[int, int], _Storage] = {}
    storage_dtypes: dict[tuple[int, int], str] = {}
    order: list[tuple[int, int]] = []
    storage_word, cpu = "storage", "cpu"  # one object each, memoized as torch's are

    rebuilt: dict[int, _Rebuild] = {}  # a tensor met twice is one object, memoized by pickle

    def convert(value: Any) -> Any:
        cls = type(value)
        if cls is dict or cls is collections.OrderedDict:
            return cls((key, convert(item)) for key, item in value.items())
        if cls is list:
            return [convert(item) for item in value]
        if cls is tuple:
            return tuple(convert(item) for item in value)
        if cls is TensorRef:
            if id(value) in rebuilt:
                return rebuilt[id(value)]
            if value.dtype not in STORAGE_TYPES:
                raise ValueError(f"dtype {value.dtype} is not written by model.torchfile")
            key = (value.raw, value.nbytes)
            storage = storages.get(key)
            if storage is None:
                class_name, item_size = STORAGE_TYPES[value.dtype]
                location = cpu if value.device == "cpu" else value.device
                storage = storages[key] = _Storage(
                    [storage_word, classes[class_name], str(len(order)), location,
                     value.nbytes // item_size])
                storage_dtypes[key] = value.dtype
                order.append(key)
            elif storage_dtypes[key] != value.dtype:
                raise ValueError("two tensors view one storage as different dtypes")
            tensor = rebuilt[id(value)] = _Rebuild(
                rebuild, (storage, value.offset, value.size, value.stride, value.requires_grad,
                          collections.OrderedDict()))
            return tensor
        return value

    obj = convert(skeleton)
    pickled = io.BytesIO()
    _Pickler(pickled, protocol=PROTOCOL).dump(obj)

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
    return _zip(records)


def _zip(records: list[tuple[str, Any]]) -> bytes:
    """A stored (uncompressed) zip whose every record's data starts 64-byte aligned."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, data in records:
            info = zipfile.ZipInfo(f"{ARCHIVE}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            filename = info.filename.encode("utf-8")
            zip64 = 20 if len(data) * 1.05 > zipfile.ZIP64_LIMIT else 0  # as zipfile decides
            start = out.tell() + 30 + len(filename) + zip64 + 4  # after a 4-byte extra header
            pad = -start % ALIGNMENT
            info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            archive.writestr(info, data)
    return out.getvalue()
