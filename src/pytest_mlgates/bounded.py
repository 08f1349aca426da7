"""What a hostile input may cost: YAML size after aliases, absurd numbers, values in messages.

A few hundred bytes can cost gigabytes once something walks them: a YAML alias bomb
(``b: [*a, *a, ...]`` nine levels deep is a billion strings), a pickled list that holds
the same list twice at every level (``repr`` of it never ends), a 5000-digit integer
(Python refuses to parse it, or to print it).  So:

* :func:`load_yaml` counts the nodes a document *expands to* -- an alias counts as all it
  stands for -- from the parser's event stream, before anything is built, and refuses
  more than :data:`MAX_YAML_NODES`, nesting deeper than :data:`MAX_YAML_DEPTH`, recursive
  aliases and integers longer than :data:`MAX_INT_DIGITS`; only then does PyYAML's safe
  loader build the data.  Gate files (``collect.py``) run the same count;
* :func:`number_problem` turns Python's int-from-str limit (``ValueError: Exceeds the
  limit (4300 digits)``) into one line; :func:`finite_or_none`-style conversions elsewhere
  catch ``OverflowError`` (``float(10**400)``);
* :func:`check_pickle` counts what a checkpoint's pickle would build the same way, before
  ``torch.load`` runs: a shared-reference bomb (whose tuple keys alone take minutes to
  hash while loading) is refused in one line;
* :func:`shown_value` prints at most ``limit`` characters of any value, walking only what
  it prints: a shared-reference list a billion items long costs what 60 characters cost,
  and no object's own ``__repr__`` is ever called.

Example::

    >>> shown_value([[1, 2] * 1000] * 1000, 20)
    '[[1, 2, 1, 2, 1, ...'
    >>> load_yaml("a: &a [x, x]\\nb: [*a, *a]")
    {'a': ['x', 'x'], 'b': [['x', 'x'], ['x', 'x']]}
"""

from __future__ import annotations

import re
import sys
from typing import Any

__all__ = ["MAX_INT_DIGITS", "MAX_PICKLE_NODES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "MEMO_OPCODES",
           "PickleRefused", "YamlRefused", "check_pickle", "check_yaml", "load_yaml", "memo_opcode", "number_problem",
           "shown_names", "shown_value"]

#: A YAML document may expand (aliases followed) to at most this many nodes: a trainer's
#: hparams.yaml or MLflow's meta.yaml holds tens to thousands; a bomb, billions.
MAX_YAML_NODES = 200_000
#: Deeper nesting than this is refused before PyYAML's (recursive) composer sees it.
MAX_YAML_DEPTH = 200
#: Python's own limit for ``int(str)``; a YAML integer longer than this is refused whatever
#: its base (hex and base-60 integers are not covered by Python's limit).
MAX_INT_DIGITS = 4300
#: A base-60 integer (``190:20:30``, YAML 1.1) with more parts than this is absurd.
_MAX_SEXAGESIMAL_PARTS = 8

# YAML 1.1's implicit int (PyYAML's resolver), and the tag an explicit !!int carries.
_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+
                   |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""", re.VERBOSE)
_INT_TAG = "tag:yaml.org,2002:int"


class YamlRefused(ValueError):
    """A YAML document refused before it is built: ``problem`` (one line) at ``line``,
    ``column`` (1-based, 0 when unknown)."""

    def __init__(self, problem: str, line: int = 0, column: int = 0) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line
        self.column = column


def _refuse(problem: str, event: Any) -> YamlRefused:
    mark = getattr(event, "start_mark", None)
    if mark is None:
        return YamlRefused(problem)
    return YamlRefused(problem, mark.line + 1, mark.column + 1)


def _loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _absurd_int(event: Any) -> bool:
    value = event.value
    if len(value) <= 40:
        return False
    if event.tag != _INT_TAG and not (event.implicit and event.implicit[0] and _INT.match(value)):
        return False
    return len(value) > MAX_INT_DIGITS or value.count(":") > _MAX_SEXAGESIMAL_PARTS


def check_yaml(text: str) -> None:
    """Refuse ``text`` (:class:`YamlRefused`) when it expands to more than
    :data:`MAX_YAML_NODES` nodes, nests deeper than :data:`MAX_YAML_DEPTH`, holds a
    recursive alias or an absurd integer.  Reads the parser's events only: memory stays
    flat whatever the document, and a bomb is refused as soon as it passes the limit.
    Syntax errors are left to the loader that follows (it says where they are)."""
    import yaml

    sizes: dict[str, int] = {}  # anchor -> how many nodes it expands to
    stack: list[list[Any]] = []  # open collections: [anchor, nodes so far]
    total = 0
    loader = _loader()(text)
    try:
        while True:
            try:
                event = loader.get_event()
            except yaml.YAMLError:
                return  # the loader reports it, with its line
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(stack) >= MAX_YAML_DEPTH:
                    raise _refuse(f"nested deeper than {MAX_YAML_DEPTH} levels", event)
                stack.append([event.anchor, 1])
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, count = stack.pop()
                if anchor is not None:
                    sizes[anchor] = count
            elif isinstance(event, yaml.ScalarEvent):
                if _absurd_int(event):
                    parts = event.value.count(":") + 1
                    raise _refuse(f"a base-60 integer of {parts} parts" if parts > 1 else
                                  f"an integer of {len(event.value)} digits, more than the "
                                  f"{MAX_INT_DIGITS} allowed", event)
                count = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                if any(open_anchor == event.anchor for open_anchor, _ in stack):
                    raise _refuse(f"alias *{event.anchor} refers to a node that contains it (recursive)", event)
                count = sizes.get(event.anchor, 1)  # an unknown alias: the loader names it
            else:
                continue
            if stack:
                stack[-1][1] += count
                grown = stack[-1][1]
            else:
                total += count
                grown = total
            if grown > MAX_YAML_NODES:
                raise _refuse(f"expands to more than {MAX_YAML_NODES} nodes once its aliases are "
                              "followed (an alias bomb?)", event)
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """YAML text as plain data through PyYAML's safe loader, after :func:`check_yaml`.

    Raises :class:`YamlRefused` for what :func:`check_yaml` refuses and for a value the
    safe constructor cannot build (a date like ``2001-13-45``), ``yaml.YAMLError`` for
    invalid YAML."""
    import yaml

    check_yaml(text)
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise YamlRefused(f"a value that cannot be read ({number_problem(exc)})") from None


def number_problem(exc: BaseException) -> str:
    """One line for a number Python would not parse (the int-from-str digit limit), or
    the exception's own first line."""
    text = str(exc)
    if "Exceeds the limit" in text or "integer string conversion" in text:
        limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else MAX_INT_DIGITS
        return f"a number of more than {limit} digits; refused"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


# --------------------------------------------------------------------------- values in messages


def _int_text(value: int) -> str:
    if value.bit_length() <= 128:
        return repr(value)
    digits = int(value.bit_length() * 0.30103) + 1
    return f"<an integer of about {digits} digits>"


def shown_value(value: Any, limit: int = 60) -> str:
    """``value`` as ``repr`` would show it, cut at ``limit`` characters, walking only what
    is shown.  Containers are entered (depth-first, stopping once ``limit`` characters are
    out); strings are cut before they are quoted; integers of more than 128 bits, tensors
    and other objects are named, never printed: no object's ``__repr__`` runs."""
    out: list[str] = []
    left = limit + 1  # one more than shown: tells "exactly limit" from "cut"

    def emit(text: str) -> bool:
        nonlocal left
        out.append(text[:left])
        left -= len(text)
        return left > 0

    def walk(item: Any, depth: int) -> bool:
        if isinstance(item, bool) or item is None or isinstance(item, float):
            return emit(repr(item))
        if isinstance(item, int):
            return emit(_int_text(item))
        if isinstance(item, str):
            return emit(repr(item[: left + 2]))
        if isinstance(item, (bytes, bytearray)):
            return emit(repr(bytes(item[: left + 2])))
        if depth > 32:
            return emit("...")
        if isinstance(item, (list, tuple, set, frozenset, dict)):
            brackets = "[]" if isinstance(item, list) else "()" if isinstance(item, tuple) else "{}"
            opening, closing = brackets[0], brackets[1]
            if not emit(opening):
                return False
            pairs = item.items() if isinstance(item, dict) else ((x, _NO_VALUE) for x in item)
            for i, (key, inner) in enumerate(pairs):
                if i and not emit(", "):
                    return False
                if not walk(key, depth + 1):
                    return False
                if inner is not _NO_VALUE and not (emit(": ") and walk(inner, depth + 1)):
                    return False
            return emit(closing)
        shape = getattr(item, "shape", None)
        if shape is not None and hasattr(item, "dtype"):
            try:
                dims = "x".join(str(int(d)) for d in tuple(shape)[:8])
            except (TypeError, ValueError):
                dims = "?"
            return emit(f"<tensor {dims} {item.dtype}>")
        return emit(f"<{type(item).__name__}>")

    walk(value, 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


_NO_VALUE = object()


def shown_names(names: Any, limit: int = 120) -> str:
    """Names joined with ``, `` as a message lists them, cut at ``limit`` characters
    (only the names shown are looked at; a name that is not a string is :func:`shown_value`)."""
    parts: list[str] = []
    size = 0
    for name in names:
        text = name[: limit + 1] if isinstance(name, str) else shown_value(name, 40)
        parts.append(text)
        size += len(text) + 2
        if size > limit:
            break
    joined = ", ".join(parts)
    return joined if len(joined) <= limit else joined[: max(0, limit - 3)] + "..."


# --------------------------------------------------------------------------- pickles (checkpoints)

#: A checkpoint's pickle may describe at most this many objects once shared references are
#: counted as often as they are reached: a model's state dict and optimizer state are tens of
#: thousands; a list that holds the same list twice, thirty levels deep, is a billion.
MAX_PICKLE_NODES = 5_000_000
#: A checkpoint's pickle part (``data.pkl``; tensors are stored beside it) larger than this
#: is refused unread.
MAX_PICKLE_BYTES = 64 * 1024 * 1024

_PUSH_ONE = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NONE", "NEWTRUE", "NEWFALSE", "UNICODE",
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT", "EMPTY_LIST", "EMPTY_TUPLE",
    "EMPTY_DICT", "EMPTY_SET", "GLOBAL", "PERSID", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER",
})
_FROM_MARK = frozenset({"LIST", "TUPLE", "DICT", "FROZENSET", "INST"})
_INTO_BELOW_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})


#: The opcodes that store the top of a pickle's stack in its memo, or push a stored one back.
MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET"})


def memo_opcode(name: str, arg: Any, stack: list[Any], memo: dict[Any, Any]) -> None:
    """Apply one of :data:`MEMO_OPCODES` to a walk's ``stack`` and ``memo``, whatever the walk
    keeps on its stack (sizes here, values in ``pickle_peek``): a pickle's shared references
    are these opcodes, so every walk must follow them the same way.  A ``GET`` of a key never
    ``PUT`` raises ``KeyError``, an empty stack ``IndexError``: the file is not a pickle."""
    if name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name.endswith("PUT"):
        memo[arg] = stack[-1]
    else:
        stack.append(memo[arg])


class PickleRefused(ValueError):
    """A pickle whose objects, shared references followed, exceed :data:`MAX_PICKLE_NODES`."""


def check_pickle(stream: Any, pickles: int = 1) -> None:
    """Count the objects the pickle(s) in ``stream`` build, each shared reference counted
    every time it is reached (what ``repr``, ``==`` or hashing a tuple key would walk), and
    raise :class:`PickleRefused` past :data:`MAX_PICKLE_NODES`.  Nothing is built: the
    opcodes are read with ``pickletools.genops`` and only sizes are kept.  A stream that
    does not parse is left to the real loader to refuse (it says why).  ``pickles``: how
    many pickles follow each other (torch's legacy format writes four)."""
    import pickletools

    for _ in range(pickles):
        try:
            if not _count_one(pickletools.genops(stream)):
                return
        except PickleRefused:
            raise
        except (ValueError, IndexError, KeyError, TypeError, EOFError, MemoryError, OverflowError, AttributeError):
            return  # not a pickle we can follow: torch.load refuses it, in its own words


def _count_one(ops: Any) -> bool:
    """Size-count one pickle; True when it ended with STOP."""
    mark = object()
    stack: list[Any] = []
    memo: dict[Any, list[int]] = {}

    def grow(cell: list[int], by: int) -> None:
        cell[0] += by
        if cell[0] > MAX_PICKLE_NODES:
            raise PickleRefused(f"its pickle builds more than {MAX_PICKLE_NODES} objects once shared "
                                "references are followed (a reference bomb?)")

    def to_mark() -> list[list[int]]:
        items: list[list[int]] = []
        while True:
            top = stack.pop()
            if top is mark:
                return items
            items.append(top)

    for opcode, arg, _pos in ops:
        name = opcode.name
        if name in _PUSH_ONE:
            stack.append([1])
        elif name == "MARK":
            stack.append(mark)
        elif name in MEMO_OPCODES:
            memo_opcode(name, arg, stack, memo)
        elif name in ("APPEND", "BUILD"):
            value = stack.pop()
            grow(stack[-1], value[0])
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            grow(stack[-1], key[0] + value[0])
        elif name in _INTO_BELOW_MARK:
            items = to_mark()
            grow(stack[-1], sum(c[0] for c in items))
        elif name in _FROM_MARK:
            cell = [1]
            grow(cell, sum(c[0] for c in to_mark()))
            stack.append(cell)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            cell = [1]
            grow(cell, sum(stack.pop()[0] for _ in range(int(name[-1]))))
            stack.append(cell)
        elif name in ("REDUCE", "NEWOBJ", "BINPERSID", "STACK_GLOBAL"):
            args = stack.pop()
            if name != "BINPERSID":
                stack.pop()
            cell = [1]
            grow(cell, args[0] if name in ("REDUCE", "NEWOBJ") else 0)
            stack.append(cell)
        elif name == "NEWOBJ_EX":
            kwargs, args = stack.pop(), stack.pop()
            stack.pop()
            cell = [1]
            grow(cell, args[0] + kwargs[0])
            stack.append(cell)
        elif name == "OBJ":
            cell = [1]
            grow(cell, sum(c[0] for c in to_mark()))
            stack.append(cell)
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            to_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "STOP":
            return True
        elif name not in ("PROTO", "FRAME", "READONLY_BUFFER"):
            return False
    return False
