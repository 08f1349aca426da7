"""Read a few top-level fields of a checkpoint that is never unpickled.

Some trainers save a pickle of a whole model (Ultralytics' ``weights/last.pt``): loading it
would import and run the code it names, so the plugin never loads it.  Yet a few plain
fields of its top-level dict say how the run ended -- Ultralytics sets ``epoch`` to -1 and
``optimizer`` to None when training finishes.  :func:`top_level_fields` reads them with
``pickletools.genops``: the opcodes are walked on a stack that holds numbers, strings and
None as themselves and every other object as an opaque stand-in, so no global is looked up,
no callable is called and nothing the file names is imported::

    >>> import io, pickle
    >>> top_level_fields(io.BytesIO(pickle.dumps({"epoch": -1, "optimizer": None, "ema": [1, 2]})))
    {'epoch': -1, 'optimizer': None, 'ema': <object>}

A torch zip checkpoint's pickle is its ``*/data.pkl`` member (:func:`checkpoint_fields`).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import IO, Any

__all__ = ["OBJECT", "PeekError", "checkpoint_fields", "top_level_fields"]


class _Object:
    """Any value the walk does not build (a model, a tensor, a nested container)."""

    def __repr__(self) -> str:
        return "<object>"


#: What a field that holds anything but a number, a string, bytes, a bool or None reads as.
OBJECT = _Object()


class PeekError(ValueError):
    """The file is not a pickle whose top level is a dict (message: why, without a path)."""


_SCALAR = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    "FLOAT", "BINFLOAT",
})
_CONSTANT = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_PUSH_OBJECT = frozenset({"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET", "GLOBAL", "PERSID", "EXT1", "EXT2", "EXT4",
                          "NEXT_BUFFER", "BYTEARRAY8"})
_POPS_PUSH_OBJECT = {"BINPERSID": 1, "STACK_GLOBAL": 2, "REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3,
                     "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_NO_STACK = frozenset({"PROTO", "FRAME", "READONLY_BUFFER"})


def top_level_fields(stream: IO[bytes]) -> dict[str, Any]:
    """The string-keyed fields of the dict a pickle builds at its top level: numbers,
    strings, bytes, bools and None as themselves, anything else as :data:`OBJECT`."""
    import pickletools

    from pytest_mlgates.bounded import MEMO_OPCODES, memo_opcode

    root: dict[str, Any] | None = None
    mark = object()
    stack: list[Any] = []
    memo: dict[Any, Any] = {}

    def to_mark() -> list[Any]:
        items: list[Any] = []
        while True:
            top = stack.pop()
            if top is mark:
                items.reverse()
                return items
            items.append(top)

    def into_root(target: Any, pairs: list[Any]) -> None:
        if target is root and root is not None:
            for key, value in zip(pairs[::2], pairs[1::2]):
                if isinstance(key, str):
                    root[key] = value

    try:
        for opcode, arg, _pos in pickletools.genops(stream):
            name = opcode.name
            if name in _SCALAR:
                stack.append(arg)
            elif name in _CONSTANT:
                stack.append(_CONSTANT[name])
            elif name == "EMPTY_DICT":
                if root is None and not stack:
                    root = {}
                    stack.append(root)
                else:
                    stack.append(OBJECT)
            elif name in _PUSH_OBJECT:
                stack.append(OBJECT)
            elif name in _POPS_PUSH_OBJECT:
                del stack[len(stack) - _POPS_PUSH_OBJECT[name]:]
                stack.append(OBJECT)
            elif name == "MARK":
                stack.append(mark)
            elif name in ("LIST", "TUPLE", "FROZENSET", "INST", "OBJ"):
                to_mark()
                stack.append(OBJECT)
            elif name == "DICT":
                pairs = to_mark()
                if root is None and not stack:
                    root = {}
                    into_root(root, pairs)
                    stack.append(root)
                else:
                    stack.append(OBJECT)
            elif name in MEMO_OPCODES:
                memo_opcode(name, arg, stack, memo)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                into_root(stack[-1], [key, value])
            elif name == "SETITEMS":
                pairs = to_mark()
                into_root(stack[-1], pairs)
            elif name in ("APPEND", "BUILD", "POP"):
                stack.pop()
            elif name in ("APPENDS", "ADDITEMS", "POP_MARK"):
                to_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "STOP":
                break
            elif name not in _NO_STACK:
                raise PeekError(f"pickle opcode {name} is not understood here")
    except PeekError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, EOFError, MemoryError, OverflowError) as exc:
        raise PeekError(f"not a readable pickle ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if root is None:
        raise PeekError("its pickle does not hold a dict at the top level")
    return root


def checkpoint_fields(path: Path) -> dict[str, Any]:
    """:func:`top_level_fields` of a ``torch.save`` file: the zip format's ``data.pkl``
    (at most ``bounded.MAX_PICKLE_BYTES``), or a plain pickle.  The caller checks that
    ``path`` is a regular file inside the run dir."""
    from pytest_mlgates.bounded import MAX_PICKLE_BYTES

    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if i.filename.endswith("data.pkl")]
            if not infos:
                raise PeekError("a zip without a data.pkl: not a torch checkpoint")
            if infos[0].file_size > MAX_PICKLE_BYTES:
                raise PeekError(f"its pickle is {infos[0].file_size} bytes, more than the {MAX_PICKLE_BYTES} read")
            with archive.open(infos[0]) as fh:
                data = fh.read(MAX_PICKLE_BYTES + 1)
    except zipfile.BadZipFile:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PICKLE_BYTES + 1)
    except (OSError, RuntimeError, NotImplementedError, EOFError) as exc:
        raise PeekError(f"unreadable ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if len(data) > MAX_PICKLE_BYTES:
        raise PeekError(f"its pickle is more than the {MAX_PICKLE_BYTES} bytes read")
    return top_level_fields(io.BytesIO(data))
