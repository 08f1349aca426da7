"""The ``check:`` expression language: a small interpreter over a whitelist of AST nodes.

A gate file says ``check: "min(val_loss) < first(val_loss)"``. Gate files are reviewed like
tests, yet arrive in pull requests and shared folders, so a check is data, never code: the
text is parsed with :func:`ast.parse` (``mode="eval"``) and the tree is walked node by node
against a whitelist. Nothing is ever passed to ``eval``, ``exec`` or ``compile``; there are
no attributes to reach, no names to look up but the run's columns, nothing to call but nine
functions that take floats. See ``docs/expressions.md`` for the language itself::

    >>> check = compile_check("final.val_recall_malignant > 0")
    >>> check.evaluate(EvalEnv({"epoch": [1.0, 2.0], "val_recall_malignant": [0.5, 0.0]}, None)).text
    'val_recall_malignant = 0.000 at epoch 2 (final); needs > 0'

Compiling does all the checking that needs no data -- every construct, every function's
arguments, the kind of every operand (a series where a number is needed is a compile error)
-- so a bad check is a collection error naming its column. Evaluating can only fail on the
data (an unknown column, an empty slice, division by zero), again with an :class:`ExprError`.
No other exception ever leaves :func:`compile_check` or :meth:`Check.evaluate`.

Truth is three-valued: a comparison with NaN is *unknown*, ``and``/``or``/``not`` follow
Kleene's logic, and a check passes only when it is definitely true -- so a NaN loss fails
``val_loss < 1`` and ``not (val_loss > 1)`` alike.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mlgates.errors import ExprError, MlgatesError

__all__ = ["FUNCTIONS", "Check", "EvalEnv", "Outcome", "compile_check", "format_value"]

#: Everything a check may call.
FUNCTIONS = ("first", "last", "min", "max", "mean", "len", "abs", "argmin", "argmax")
_SERIES_FUNCTIONS = ("first", "last", "mean", "len", "argmin", "argmax")

#: ``x ** y`` refuses ``|y|`` above this: no 9**9**9 that runs until the machine gives up.
MAX_EXPONENT = 64
#: Longer checks are refused before parsing; real ones are a line.
MAX_SOURCE_CHARS = 2000
#: Deeper trees are refused; keeps every recursion here far from Python's limit.
MAX_DEPTH = 60

_ALLOWED = "allowed: " + ", ".join(FUNCTIONS)

_BINOPS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/",
    ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
}
_FORBIDDEN_BINOPS: dict[type, str] = {
    ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
}
_CMPOPS: dict[type, str] = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
}
_FORBIDDEN_CMPOPS: dict[type, str] = {
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}

# Names users try that are not part of the language, and what to say about them.
_CONSTRUCTS: dict[type, str] = {
    ast.Lambda: "lambda", ast.ListComp: "a list comprehension",
    ast.SetComp: "a set comprehension", ast.DictComp: "a dict comprehension",
    ast.GeneratorExp: "a generator expression", ast.IfExp: "a conditional (x if c else y)",
    ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string",
    ast.NamedExpr: "an assignment (:=)", ast.Starred: "a starred expression (*x)",
    ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}


# --------------------------------------------------------------------------- public types


class EvalEnv:
    """What a check sees: the run's log as columns, and the run's best row.

    ``columns`` maps a column name to its values, one per row of the log, in log order
    (lists, or numpy arrays, which are read without a copy).  ``index`` names the column
    that numbers the rows: ``epoch`` (the default; without that column rows count 1, 2,
    ...) or ``step`` for a log of optimizer steps.  ``held`` maps a *sparse* column to a
    boolean mask of the rows that hold a value: its series are those rows only, so in a
    log of steps ``min(eval_loss)`` reads the evaluation rows and ``len(eval_loss)``
    counts evaluations.  Columns not in ``held`` have a value (maybe NaN) in every row.

    ``best_epoch`` is the row number (an epoch, or a step in a log of steps) that
    ``best.<col>`` reads (``None``: the run records none).  It may be given as a function,
    asked on first read: finding a run's best epoch can mean opening a checkpoint (a
    Lightning run's monitor is in its ``.ckpt`` files), which a check that never says
    ``best.`` must not need.
    ``metric_aliases`` are a gate file's ``metrics:`` renames: the check says ``val_loss``,
    the log column is ``eval_loss``.

    An env is meant to be shared by every check of one run: columns are converted to
    arrays once, and the masked series are kept (:meth:`from_log` builds one from a log).
    """

    def __init__(self, columns: Mapping[str, Any],
                 best_epoch: float | Callable[[], int | float | None] | None = None,
                 metric_aliases: dict[str, str] | None = None, *,
                 held: Mapping[str, Any] | None = None, index: str = "epoch") -> None:
        self.columns = columns
        self._best_epoch = best_epoch
        self.metric_aliases: dict[str, str] = {} if metric_aliases is None else metric_aliases
        self.held: Mapping[str, Any] = {} if held is None else held
        self.index = index
        #: converted columns and masked series, shared by the checks evaluated on this env
        self.cache: dict[Any, Any] = {}

    @classmethod
    def from_log(cls, log: Any, best_epoch: float | Callable[[], int | float | None] | None = None,
                 metric_aliases: dict[str, str] | None = None) -> EvalEnv:
        """The env of a :class:`pytest_mlgates.runlog.Log`: its arrays, its sparse columns'
        masks (a log of steps), its index; ``metric_aliases`` renames applied up front
        (``columns`` then holds both names)."""
        from pytest_mlgates.runlog import ArrayLists

        arrays = {name: log.array(name) for name in log.names}
        held = {name: mask for name in log.names if log.sparse and (mask := log.held(name)) is not None}
        for spec_name, logged in (metric_aliases or {}).items():
            if logged in arrays and spec_name not in arrays:
                arrays[spec_name] = arrays[logged]
                if logged in held:
                    held[spec_name] = held[logged]
        env = cls(ArrayLists(arrays), best_epoch, held=held, index=log.index)
        env.cache.update({("values", name): array for name, array in arrays.items()})
        return env

    @property
    def best_epoch(self) -> int | float | None:
        if callable(self._best_epoch):
            self._best_epoch = self._best_epoch()
        return self._best_epoch

    def __repr__(self) -> str:
        best = "<not read yet>" if callable(self._best_epoch) else repr(self._best_epoch)
        return (f"EvalEnv(columns={sorted(self.columns)!r}, best_epoch={best}, "
                f"metric_aliases={self.metric_aliases!r}, index={self.index!r})")


@dataclass(frozen=True)
class Outcome:
    """The verdict of one check on one run.

    ``value`` is the measured number (for ``L op R`` the value of ``L``; for ``and``/``or``
    the first operand that decided the failure), ``where`` its provenance
    (``at epoch 37 (final)``), ``needs`` what was required (``> 0``), and ``text`` the
    spec's one line: ``val_recall_malignant = 0.000 at epoch 37 (final); needs > 0``.
    """

    passed: bool
    value: float | None
    where: str
    needs: str
    text: str


def format_value(value: float | None, is_int: bool = False) -> str:
    """A measured number as the failure line shows it: 3 decimals, ``nan``, ``inf``.

    Numbers too small for 3 decimals keep 3 significant digits instead (``0.000123``), so a
    tiny learning rate never reads as ``0.000``; counts and epochs print as integers.
    """
    if value is None:
        return "none"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if is_int and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if value != 0 and (abs(value) < 0.0005 or abs(value) >= 1e9):
        return f"{value:.3g}"
    return f"{value:.3f}"


def _format_threshold(value: float, is_int: bool) -> str:
    """A number the user typed (``> 0``, ``< 0.51``): shown as written, not padded."""
    if math.isnan(value) or math.isinf(value):
        return format_value(value)
    if is_int and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


# --------------------------------------------------------------------------- values


class _Num:
    """A number with its provenance (``at epoch 12 (best)``)."""

    __slots__ = ("is_int", "value", "where")

    def __init__(self, value: float, where: str = "", is_int: bool = False) -> None:
        self.value = value
        self.where = where
        self.is_int = is_int


class _Series:
    """A column, or a slice of one: values, the row number of each (an epoch, or a step)
    and, in a log of steps that has an epoch column, the epoch of each (else None)."""

    __slots__ = ("epochs", "is_int", "labels", "values")

    def __init__(self, values: Any, labels: Any, is_int: bool = False, epochs: Any = None) -> None:
        self.values = values
        self.labels = labels
        self.is_int = is_int
        self.epochs = epochs

    def __getitem__(self, bounds: slice) -> _Series:
        epochs = None if self.epochs is None else self.epochs[bounds]
        return _Series(self.values[bounds], self.labels[bounds], self.is_int, epochs)

    def epoch_at(self, i: int) -> float | None:
        return None if self.epochs is None else float(self.epochs[i])


class _Verdict:
    """A truth value (``True``/``False``/``None`` for unknown) and the line explaining it."""

    __slots__ = ("name", "needs", "state", "text", "value", "where")

    def __init__(self, state: bool | None, value: float | None, where: str, needs: str, text: str,
                 name: str = ""):
        self.name = name  # what was measured, for `needs` of a compound check
        self.state = state
        self.value = value
        self.where = where
        self.needs = needs
        self.text = text


def _epoch_label(epoch: float) -> str:
    if math.isfinite(epoch) and epoch == int(epoch) and abs(epoch) < 1e15:
        return str(int(epoch))
    return format_value(epoch) if not math.isfinite(epoch) else f"{epoch:g}"


def _at(word: str, label: float, epoch: float | None = None, tag: str = "") -> str:
    """``at epoch 12 (final)``; in a log of steps ``at step 1500 (epoch 2, min)``."""
    notes = [f"epoch {_epoch_label(epoch)}"] if epoch is not None and math.isfinite(epoch) else []
    if tag:
        notes.append(tag)
    return f"at {word} {_epoch_label(float(label))}" + (f" ({', '.join(notes)})" if notes else "")


def _combine_where(*nums: _Num) -> str:
    """One provenance when every non-constant operand shares it, else none."""
    places = {n.where for n in nums if n.where}
    return places.pop() if len(places) == 1 else ""


# --------------------------------------------------------------------------- evaluation frame


class _Frame:
    """One evaluation: the env, with columns converted to float arrays once (kept in the
    env's cache, shared by every check of the run) and rows numbered."""

    def __init__(self, env: EvalEnv) -> None:
        columns = getattr(env, "columns", None)
        if not isinstance(columns, Mapping):
            raise ExprError(f"evaluate() needs an EvalEnv with a dict of columns, "
                            f"got {type(env).__name__}")
        aliases = getattr(env, "metric_aliases", None)
        held = getattr(env, "held", None)
        index = getattr(env, "index", "epoch")
        cache = getattr(env, "cache", None)
        self._env = env
        self.columns: Mapping[str, Any] = columns
        self.aliases: dict[str, str] = aliases if isinstance(aliases, dict) else {}
        self.held: Mapping[str, Any] = held if isinstance(held, Mapping) else {}
        self.index: str = index if index in ("epoch", "step") else "epoch"
        self.cache: dict[Any, Any] = cache if isinstance(cache, dict) else {}

    @property
    def np(self) -> Any:
        """numpy: a log's columns are arrays (imported when a check reads one, so that
        collecting a gate file imports nothing heavy)."""
        import numpy

        return numpy

    @property
    def best_epoch(self) -> float | None:
        """Read from the env only by a check that says ``best.`` (see :class:`EvalEnv`)."""
        best = getattr(self._env, "best_epoch", None)
        return best if isinstance(best, (int, float)) and not isinstance(best, bool) else None

    def lookup(self, name: str) -> str | None:
        """The log column a name in the check refers to, after ``metrics:`` renames."""
        columns = self.columns
        real = self.aliases.get(name, name)
        if isinstance(real, str) and real in columns:
            return real
        if name in columns:
            return name
        return None

    def values(self, real: str, node: _Node | None = None) -> Any:
        """A column as a float64 array (None and "" read as NaN); a bad cell fails at ``node``."""
        key = ("values", real)
        found = self.cache.get(key)
        if found is None:
            found = self._convert(real, node)
            self.cache[key] = found
        return found

    def _convert(self, real: str, node: _Node | None) -> Any:
        np = self.np
        raw = self.columns[real]
        if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
            raise self._bad_data(f"column '{real}' is not a list of numbers", node)
        try:
            array = np.asarray(raw, dtype=np.float64)
            if array.ndim == 1:
                return array
        except (TypeError, ValueError, OverflowError):
            pass
        out: list[float] = []  # cell by cell, to name the row that is not a number
        for row, cell in enumerate(raw, start=1):
            try:
                out.append(math.nan if cell is None or cell == "" else float(cell))
            except (TypeError, ValueError, OverflowError):
                raise self._bad_data(f"column '{real}': row {row} is not a number "
                                     f"({str(cell)[:40]!r})", node) from None
        return np.asarray(out, dtype=np.float64)

    @staticmethod
    def _bad_data(message: str, node: _Node | None) -> ExprError:
        # The index column is read for every check: its errors point at the check's start.
        return node.fail(message) if node is not None else ExprError(f"{message} at column 1")

    @property
    def word(self) -> str:
        """What a row number is called in messages: ``epoch`` or ``step``."""
        return self.index

    @property
    def labels(self) -> Any:
        """The number of every row: the index column, else 1, 2, ... (as many as the
        longest column)."""
        found = self.cache.get("labels")
        if found is None:
            real = self.lookup(self.index)
            if real is not None:
                found = self.values(real)
            else:
                rows = 0
                for values in self.columns.values():
                    try:
                        rows = max(rows, len(values))
                    except TypeError:
                        pass
                found = self.np.arange(1, rows + 1, dtype=self.np.float64)
            self.cache["labels"] = found
        return found

    @property
    def row_epochs(self) -> Any:
        """The epoch of every row of a log of steps that has an epoch column, else None."""
        if self.index != "step":
            return None
        real = self.lookup("epoch")
        return None if real is None else self.values(real)

    def labels_for(self, count: int) -> Any:
        """Row numbers for a column of ``count`` values (rows past the index column: 1-based)."""
        labels = self.labels
        if count <= len(labels):
            return labels[:count]
        np = self.np
        return np.concatenate((labels, np.arange(len(labels) + 1, count + 1, dtype=np.float64)))

    def mask(self, real: str, count: int) -> Any:
        """The rows a sparse column holds a value in (None: every row)."""
        mask = self.held.get(real)
        if mask is None:
            return None
        mask = self.np.asarray(mask, dtype=bool)
        return mask if mask.shape == (count,) else None

    def series(self, real: str, node: _Node | None, is_int: bool) -> _Series:
        """A column as checks read it: every row, or the rows that hold a sparse column."""
        key = ("series", real)
        found = self.cache.get(key)
        if found is None:
            values = self.values(real, node)
            labels = self.labels_for(len(values))
            epochs = self.row_epochs
            if epochs is not None and len(epochs) != len(values):
                epochs = None
            mask = self.mask(real, len(values))
            if mask is not None:
                values, labels = values[mask], labels[mask]
                epochs = None if epochs is None else epochs[mask]
            found = _Series(values, labels, False, epochs)
            self.cache[key] = found
        return _Series(found.values, found.labels, is_int, found.epochs)

    def span(self, word: str) -> str:
        """``the log has epochs 1-40`` (of the index column, or of the epoch column of a
        log of steps)."""
        if word == self.index:
            numbers = self.labels
        else:
            real = self.lookup(word)
            numbers = self.values(real) if real is not None else self.np.empty(0)
            numbers = numbers[self.np.isfinite(numbers)]
        if not len(numbers):
            return "the log has no rows" if word == self.index else f"the log has no {word} column"
        return f"the log has {word}s {_epoch_label(float(numbers[0]))}-{_epoch_label(float(numbers[-1]))}"

    def rows_numbered(self, word: str, number: float) -> Any:
        """Positions of the rows whose ``word`` (``epoch``/``step``) is ``number``."""
        np = self.np
        if word == self.index:
            numbers = self.labels
        else:
            real = self.lookup(word)
            if real is None:
                return None
            numbers = self.values(real)
        return np.flatnonzero(numbers == number)

    def known_names(self) -> list[str]:
        names = [str(name) for name in self.columns]
        names += [str(a) for a, real in self.aliases.items() if real in self.columns]
        return sorted(set(names))


# --------------------------------------------------------------------------- compiled nodes


class _Unit:
    """The source of one check, for turning AST positions into messages with a column.

    ``parsed`` is the text handed to :func:`ast.parse`; ``shift`` maps its offsets back onto
    ``source``, the text the user wrote (leading blank lines of a YAML block scalar, and
    the parenthesis that lets a multi-line check parse, are not the user's columns).
    """

    __slots__ = ("_ascii", "_line_starts", "parsed", "shift", "source")

    def __init__(self, parsed: str, source: str, shift: int) -> None:
        self.parsed, self.source, self.shift = parsed, source, shift
        self._ascii = parsed.isascii()
        starts = [0]
        index = parsed.find("\n")
        while index >= 0:
            starts.append(index + 1)
            index = parsed.find("\n", index + 1)
        self._line_starts = starts

    def char_offset(self, lineno: int, col: int, *, in_bytes: bool = True) -> int:
        """``ast`` columns count UTF-8 bytes; users count characters from the start."""
        if not 1 <= lineno <= len(self._line_starts):
            return 0
        start = self._line_starts[lineno - 1]
        if self._ascii or not in_bytes:
            return start + col
        line = self.parsed[start:].split("\n", 1)[0]
        return start + len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))

    def offset_of(self, node: ast.AST) -> int:
        return self.char_offset(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def end_of(self, node: ast.AST) -> int:
        end_line = getattr(node, "end_lineno", None)
        end_col = getattr(node, "end_col_offset", None)
        if end_line is None or end_col is None:
            return self.offset_of(node)
        return self.char_offset(end_line, end_col)

    def find_after(self, node: ast.AST, symbol: str, stop: int | None = None) -> int:
        """Where an operator or a dot sits after ``node`` (``ast`` does not record it)."""
        start = self.end_of(node)
        found = self.parsed.find(symbol, start, len(self.parsed) if stop is None else max(start, stop))
        return found if found >= 0 else self.offset_of(node)

    def error(self, message: str, offset: int, hint: str = "") -> ExprError:
        """An ExprError at ``offset`` of the parsed text, reported in the user's columns:
        ``unknown function 'open' at column 1; allowed: first, ...``."""
        offset = max(0, min(offset + self.shift, len(self.source)))
        hint = f"; {hint}" if hint else ""
        return ExprError(f"{message} at column {offset + 1}{hint}", offset=offset, source=self.source)


class _Node:
    """A checked piece of a check; ``kind`` is ``num``, ``series`` or ``bool``."""

    __slots__ = ("const", "kind", "tree", "unit")
    kind_name = ""

    def __init__(self, tree: ast.AST, unit: _Unit, kind: str, const: bool = False) -> None:
        self.tree = tree
        self.unit = unit
        self.kind = kind
        self.const = const  # no column in it: the same value whatever the run

    @property
    def name(self) -> str:
        """How the failure line names this value (a row form names just its column)."""
        return _unparse(self.tree)

    @property
    def text(self) -> str:
        """The expression as a message quotes it (normalized by ``ast.unparse``)."""
        return _unparse(self.tree)

    def fail(self, message: str, hint: str = "") -> ExprError:
        return self.unit.error(message, self.unit.offset_of(self.tree), hint)

    # num nodes return _Num, series nodes _Series, bool nodes _Verdict
    def eval(self, frame: _Frame) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _unparse(tree: ast.AST) -> str:
    try:
        return ast.unparse(tree)
    except Exception:  # noqa: BLE001 - a name for a message must never be the failure
        return "<expression>"


class _Literal(_Node):
    __slots__ = ("is_int", "value")

    def __init__(self, tree: ast.AST, unit: _Unit, value: float, is_int: bool) -> None:
        super().__init__(tree, unit, "num", const=True)
        self.value = value
        self.is_int = is_int

    def eval(self, frame: _Frame) -> _Num:
        return _Num(self.value, "", self.is_int)


class _BoolLiteral(_Node):
    __slots__ = ("value",)

    def __init__(self, tree: ast.AST, unit: _Unit, value: bool) -> None:
        super().__init__(tree, unit, "bool", const=True)
        self.value = value

    def eval(self, frame: _Frame) -> _Verdict:
        return _Verdict(self.value, None, "", "", str(self.value))


class _Column(_Node):
    __slots__ = ("column",)

    def __init__(self, tree: ast.AST, unit: _Unit, column: str) -> None:
        super().__init__(tree, unit, "series")
        self.column = column

    def eval(self, frame: _Frame) -> _Series:
        real = frame.lookup(self.column)
        if real is None:
            if self.column == "epoch" and frame.index == "epoch":
                labels = frame.labels
                return _Series(labels, labels, is_int=True)
            raise _unknown_column(self, self.column, frame)
        return frame.series(real, self, is_int=self.column in ("epoch", "step"))


def _unknown_column(node: _Node, name: str, frame: _Frame) -> ExprError:
    import difflib  # only on this error path: keeps the plugin's import light

    known = frame.known_names()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return node.fail(f"unknown column '{name}'", f"closest: {', '.join(close)}")
    shown = ", ".join(known[:12]) + (f", ... ({len(known)} in all)" if len(known) > 12 else "")
    return node.fail(f"unknown column '{name}'", f"the log has: {shown or 'no columns'}")


class _Subscript(_Node):
    """``series[i]`` (a num: one value, out of range is an error) or ``series[a:b:c]``
    (a series: Python's slice, which never is)."""

    __slots__ = ("key", "series")

    def __init__(self, tree: ast.AST, unit: _Unit, series: _Node, key: int | slice) -> None:
        super().__init__(tree, unit, "series" if isinstance(key, slice) else "num")
        self.series = series
        self.key = key

    def eval(self, frame: _Frame) -> _Num | _Series:
        series = self.series.eval(frame)
        if isinstance(self.key, slice):
            return series[self.key]  # type: ignore[no-any-return]
        count = len(series.values)
        if not -count <= self.key < count:
            raise self.fail(f"{self.name}: index {self.key} is out of range "
                            f"(the series has {count} values)")
        value, label = float(series.values[self.key]), float(series.labels[self.key])
        return _Num(value, _at(frame.word, label, series.epoch_at(self.key)), series.is_int)


class _Row(_Node):
    """``final.col``, ``best.col``, ``epoch[n].col``, ``step[n].col``: one column's value
    in one row.  In a log of steps a column's row is the last one that holds it: ``final``
    is its last value, ``step[n]``/``epoch[n]``/``best`` its value in the last row of that
    step or epoch that holds it."""

    __slots__ = ("column", "epoch", "form")

    def __init__(self, tree: ast.AST, unit: _Unit, form: str, epoch: int | None, column: str) -> None:
        super().__init__(tree, unit, "num")
        self.form, self.epoch, self.column = form, epoch, column

    @property
    def name(self) -> str:
        return self.column

    def eval(self, frame: _Frame) -> _Num:
        real = frame.lookup(self.column)
        if real is None:
            if not (self.column == "epoch" and frame.index == "epoch"):
                raise _unknown_column(self, self.column, frame)
            values = frame.labels
        else:
            values = frame.values(real, self)
        is_int = self.column in ("epoch", "step")
        labels = frame.labels
        mask = frame.mask(real, len(values)) if real is not None else None
        if self.form == "final":
            rows = len(labels) if mask is None else len(values)
            if rows == 0:
                raise self.fail(f"{_unparse(self.tree)}: the log has no rows")
            if mask is None:
                row = len(labels) - 1
            else:
                held = frame.np.flatnonzero(mask)
                if not held.size:
                    raise self.fail(f"{_unparse(self.tree)}: column '{self.column}' has no value in the log")
                row = int(held[-1])
            suffix = "final"
        elif self.form == "best":
            best = frame.best_epoch
            if best is None:
                raise self.fail(f"{_unparse(self.tree)}: best {frame.word} unknown "
                                "(the run records no best epoch for its monitor metric)")
            row = self._pick(frame, frame.word, float(best), mask, values)
            suffix = "best"
        else:
            row = self._pick(frame, self.form, float(self.epoch or 0), mask, values)
            suffix = ""
        label = float(labels[row]) if row < len(labels) else float(row + 1)
        epochs = frame.row_epochs
        epoch = float(epochs[row]) if epochs is not None and row < len(epochs) else None
        if row >= len(values):
            raise self.fail(f"{_unparse(self.tree)}: column '{self.column}' has no value at "
                            f"{frame.word} {_epoch_label(label)}")
        return _Num(float(values[row]), _at(frame.word, label, epoch, suffix), is_int)

    def _pick(self, frame: _Frame, word: str, number: float, mask: Any, values: Any) -> int:
        """The row numbered ``number`` (by ``word``) that gives the column's value."""
        rows = frame.rows_numbered(word, number)
        shown = _epoch_label(number)
        if rows is None:
            raise self.fail(f"{_unparse(self.tree)}: the log has no {word} column")
        if not len(rows):
            if self.form == "best":
                raise self.fail(f"{_unparse(self.tree)}: the best {word} {shown} is not in the log "
                                f"({frame.span(word)})")
            raise self.fail(f"{_unparse(self.tree)}: no row with {word} {shown} ({frame.span(word)})")
        if frame.index == "epoch" and mask is None:
            return int(rows[0])  # a log of epochs: that epoch's row
        if mask is not None:
            rows = rows[rows < len(mask)]
            rows = rows[mask[rows]]
            if not len(rows):
                raise self.fail(f"{_unparse(self.tree)}: column '{self.column}' has no value at {word} {shown}")
        return int(rows[-1])


class _Call(_Node):
    __slots__ = ("args", "function")

    def __init__(self, tree: ast.AST, unit: _Unit, function: str, args: list[_Node]) -> None:
        const = all(arg.const for arg in args) and args[0].kind == "num"
        super().__init__(tree, unit, "num", const=const)
        self.function = function
        self.args = args

    def eval(self, frame: _Frame) -> _Num:
        function = self.function
        if self.args[0].kind == "num":  # abs(x), min(a, b, ...), max(a, b, ...)
            nums = [arg.eval(frame) for arg in self.args]
            if function == "abs":
                return _Num(abs(nums[0].value), nums[0].where, nums[0].is_int)
            chosen = nums[0]
            for num in nums:
                if math.isnan(num.value):
                    chosen = num
                    break
                if (num.value < chosen.value) if function == "min" else (num.value > chosen.value):
                    chosen = num
            return _Num(chosen.value, chosen.where, chosen.is_int)
        series = self.args[0].eval(frame)
        values, labels = series.values, series.labels
        count = len(values)
        if function == "len":
            return _Num(float(count), "", True)
        if not count:
            raise self.fail(f"{self.name}: the series is empty")
        word = frame.word
        if function == "first":
            return _Num(float(values[0]), _at(word, labels[0], series.epoch_at(0), "first"), series.is_int)
        if function == "last":
            return _Num(float(values[-1]), _at(word, labels[-1], series.epoch_at(-1), "last"), series.is_int)
        np = frame.np
        if function == "mean":
            span = (f"over {word} {_epoch_label(float(labels[0]))}" if count == 1 else
                    f"over {word}s {_epoch_label(float(labels[0]))}-{_epoch_label(float(labels[-1]))}")
            with np.errstate(all="ignore"):
                mean = float(np.add.reduce(values) / count)
            return _Num(mean, f"{span} (mean)")
        # min, max, argmin, argmax: NaN anywhere makes the answer NaN (the first NaN's row)
        want_min = function in ("min", "argmin")
        nans = np.flatnonzero(np.isnan(values))
        if nans.size:
            best = int(nans[0])
        else:
            best = int(np.argmin(values) if want_min else np.argmax(values))
        if function in ("min", "max"):
            return _Num(float(values[best]), _at(word, labels[best], series.epoch_at(best), function),
                        series.is_int)
        if nans.size:
            return _Num(math.nan, _at(word, labels[best], series.epoch_at(best), "nan"))
        label = float(labels[best])
        return _Num(label, "", math.isfinite(label) and label == int(label))


class _Neg(_Node):
    __slots__ = ("operand", "sign")

    def __init__(self, tree: ast.AST, unit: _Unit, operand: _Node, sign: int) -> None:
        super().__init__(tree, unit, "num", const=operand.const)
        self.operand = operand
        self.sign = sign

    def eval(self, frame: _Frame) -> _Num:
        num = self.operand.eval(frame)
        return _Num(-num.value if self.sign < 0 else num.value, num.where, num.is_int)


class _BinOp(_Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, tree: ast.AST, unit: _Unit, op: str, left: _Node, right: _Node) -> None:
        super().__init__(tree, unit, "num", const=left.const and right.const)
        self.op, self.left, self.right = op, left, right

    def eval(self, frame: _Frame) -> _Num:
        left, right = self.left.eval(frame), self.right.eval(frame)
        a, b, op = left.value, right.value, self.op
        where = _combine_where(left, right)
        is_int = left.is_int and right.is_int and op in ("+", "-", "*", "//", "%")
        if op in ("/", "//", "%") and b == 0:
            raise self.fail(f"division by zero in {self.name} ({_unparse(self.right.tree)} is 0)")
        try:
            if op == "+":
                result = a + b
            elif op == "-":
                result = a - b
            elif op == "*":
                result = a * b
            elif op == "/":
                result = a / b
            elif op == "//":
                result = a // b
            elif op == "%":
                result = a % b
            else:
                result = self._power(a, b)
        except OverflowError:  # floats give inf rather than raise; kept for safety
            raise self.fail(f"{self.name} overflows") from None
        if is_int and not (math.isfinite(result) and result == int(result)):
            is_int = False
        return _Num(result, where, is_int)

    def _power(self, a: float, b: float) -> float:
        if math.isinf(b) or abs(b) > MAX_EXPONENT:
            raise self.fail(f"exponent {_format_threshold(b, True)} in {self.name} is too large "
                            f"(at most {MAX_EXPONENT} in absolute value)")
        try:
            result = a ** b
        except ZeroDivisionError:
            raise self.fail(f"zero to a negative power in {self.name}") from None
        except OverflowError:
            raise self.fail(f"{self.name} overflows") from None
        if isinstance(result, complex):
            raise self.fail(f"{self.name}: a negative number to a fractional power has no real value")
        return float(result)


class _Compare(_Node):
    """``a < b``, ``0 < x <= 1``: every operand is evaluated, NaN makes a pair unknown."""

    __slots__ = ("measured", "operands", "ops")

    def __init__(self, tree: ast.AST, unit: _Unit, operands: list[_Node], ops: list[str]) -> None:
        super().__init__(tree, unit, "bool", const=all(o.const for o in operands))
        self.operands, self.ops = operands, ops
        # The measured side is the first operand that reads the run: in `0 < x` it is x.
        self.measured = next((i for i, o in enumerate(operands) if not o.const), 0)

    def eval(self, frame: _Frame) -> _Verdict:
        nums = [operand.eval(frame) for operand in self.operands]
        state: bool | None = True
        for i, op in enumerate(self.ops):
            a, b = nums[i].value, nums[i + 1].value
            pair = None if math.isnan(a) or math.isnan(b) else _COMPARE[op](a, b)
            state = _and(state, pair)
        m = self.measured
        parts = []
        for i, op in enumerate(self.ops):
            if i == m:
                parts.append(f"{op} {self._shown(nums, i + 1)}")
            elif i + 1 == m:
                parts.append(f"{_FLIPPED[op]} {self._shown(nums, i)}")
            else:
                parts.append(f"{self._shown(nums, i)} {op} {self._shown(nums, i + 1)}")
        needs = " and ".join(parts)
        measured = nums[m]
        where = f" {measured.where}" if measured.where else ""
        head = f"{self.operands[m].name} = {format_value(measured.value, measured.is_int)}{where}"
        return _Verdict(state, measured.value, measured.where, needs, f"{head}; needs {needs}",
                        self.operands[m].name)

    def _shown(self, nums: list[_Num], index: int) -> str:
        num, node = nums[index], self.operands[index]
        if node.const:
            return _format_threshold(num.value, num.is_int)
        return f"{format_value(num.value, num.is_int)} ({_unparse(node.tree)})"


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


class _BoolOp(_Node):
    __slots__ = ("is_and", "operands")

    def __init__(self, tree: ast.AST, unit: _Unit, is_and: bool, operands: list[_Node]) -> None:
        super().__init__(tree, unit, "bool", const=all(o.const for o in operands))
        self.is_and, self.operands = is_and, operands

    def eval(self, frame: _Frame) -> _Verdict:
        decisive = not self.is_and  # the value that short-circuits: False for and, True for or
        verdicts: list[_Verdict] = []
        state: bool | None = not decisive
        for operand in self.operands:
            verdict = operand.eval(frame)
            verdicts.append(verdict)
            if verdict.state is decisive:
                state = decisive
                break
            if verdict.state is None:
                state = None
        if state is True:
            shown = verdicts if self.is_and else [v for v in verdicts if v.state is True][:1]
            joiner = " and "
        elif self.is_and:
            shown = [next(v for v in verdicts if v.state is not True)]
            joiner = " and "
        else:
            shown, joiner = verdicts, " or "
        first = shown[0]
        if len(shown) == 1:
            return _Verdict(state, first.value, first.where, first.needs, first.text, first.name)
        text = joiner.join(f"({v.text})" for v in shown)
        needs = joiner.join(f"({v.name} {v.needs})" if v.name else f"({v.needs})"
                            for v in shown if v.needs)
        return _Verdict(state, first.value, first.where, needs, text, "")


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, tree: ast.AST, unit: _Unit, operand: _Node) -> None:
        super().__init__(tree, unit, "bool", const=operand.const)
        self.operand = operand

    def eval(self, frame: _Frame) -> _Verdict:
        inner = self.operand.eval(frame)
        state = None if inner.state is None else not inner.state
        if isinstance(self.operand, _Compare):
            head = inner.text.split("; needs ", 1)[0]
            needs = f"not {inner.needs}"
            text = f"{head}; needs {needs}"
        else:
            needs = f"not ({inner.needs})" if inner.needs else ""
            text = f"not ({inner.text})"
        return _Verdict(state, inner.value, inner.where, needs, text, inner.name)


# --------------------------------------------------------------------------- compiling


class _Builder:
    """Walks the AST of one check against the whitelist, building `_Node`s."""

    def __init__(self, unit: _Unit) -> None:
        self.unit = unit
        self.names: set[str] = set()

    def fail(self, message: str, node: ast.AST, hint: str = "") -> ExprError:
        return self.unit.error(message, self.unit.offset_of(node), hint)

    def build(self, node: ast.AST, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.fail(f"expression nested too deeply (more than {MAX_DEPTH} levels)", node)
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            construct = _CONSTRUCTS.get(type(node), type(node).__name__)
            raise self.fail(f"{construct} is not allowed in a check", node)
        return method(node, depth + 1)

    # -- leaves

    def _Constant(self, node: ast.Constant, depth: int) -> _Node:
        value = node.value
        if isinstance(value, bool):
            return _BoolLiteral(node, self.unit, value)
        if isinstance(value, int):
            try:
                return _Literal(node, self.unit, float(value), True)
            except OverflowError:
                raise self.fail("number too large", node) from None
        if isinstance(value, float):
            return _Literal(node, self.unit, value, False)
        if isinstance(value, (str, bytes)):
            raise self.fail("strings are not allowed in a check", node)
        if isinstance(value, complex):
            raise self.fail("complex numbers are not allowed in a check", node)
        raise self.fail(f"{_unparse(node)} is not allowed in a check", node)

    def _Name(self, node: ast.Name, depth: int) -> _Node:
        name = node.id
        if name.startswith("__"):
            raise self.fail(f"name '{name}' is not allowed", node)
        if name in ("final", "best"):
            raise self.fail(f"'{name}' needs a column: {name}.<column>, e.g. {name}.val_loss", node)
        if name in FUNCTIONS:
            raise self.fail(f"'{name}' is a function: call it, e.g. {name}(val_loss)", node)
        self.names.add(name)
        return _Column(node, self.unit, name)

    # -- final.col, best.col, epoch[n].col

    def _Attribute(self, node: ast.Attribute, depth: int) -> _Node:
        column = node.attr
        base = node.value
        dot = self.unit.find_after(base, ".")
        if column.startswith("__"):
            raise self.unit.error(f"name '{column}' is not allowed", dot + 1)
        if isinstance(base, ast.Name) and base.id in ("final", "best"):
            self.names.add(column)
            return _Row(node, self.unit, base.id, None, column)
        if (isinstance(base, ast.Subscript) and isinstance(base.value, ast.Name)
                and base.value.id in ("epoch", "step")):
            word = base.value.id
            number = self._int_literal(base.slice, f"a{'n' if word == 'epoch' else ''} {word} number")
            if number < 0:
                raise self.fail(f"a{'n' if word == 'epoch' else ''} {word} number cannot be negative", base.slice)
            self.names.add(column)
            return _Row(node, self.unit, word, number, column)
        raise self.unit.error(
            f"attribute access '.{column}' is not allowed", dot,
            "only final.<column>, best.<column>, epoch[<n>].<column> and step[<n>].<column>")

    # -- series[i], series[a:b]

    def _Subscript(self, node: ast.Subscript, depth: int) -> _Node:
        series = self.build(node.value, depth)
        if series.kind != "series":
            raise self.fail(f"only a series (a column such as val_loss) can be indexed; "
                            f"'{series.text}' is {_kind_words(series.kind)}", node)
        index = node.slice
        if isinstance(index, ast.Slice):
            lower = None if index.lower is None else self._int_literal(index.lower, "a slice bound")
            upper = None if index.upper is None else self._int_literal(index.upper, "a slice bound")
            step = None if index.step is None else self._int_literal(index.step, "a slice step")
            if step == 0:
                raise self.fail("a slice step cannot be zero", index.step or index)
            return _Subscript(node, self.unit, series, slice(lower, upper, step))
        return _Subscript(node, self.unit, series, self._int_literal(index, "an index"))

    def _int_literal(self, node: ast.AST, what: str) -> int:
        sign = 1
        inner = node
        if isinstance(inner, ast.UnaryOp) and isinstance(inner.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(inner.op, ast.USub) else 1
            inner = inner.operand
        if (isinstance(inner, ast.Constant) and isinstance(inner.value, int)
                and not isinstance(inner.value, bool)):
            return sign * inner.value
        raise self.fail(f"{what} must be a whole number such as 3 or -5, "
                        f"not '{_unparse(node)}'", node)

    # -- calls

    def _Call(self, node: ast.Call, depth: int) -> _Node:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                raise self.unit.error(f"calling '.{func.attr}()' is not allowed",
                                      self.unit.find_after(func.value, "."), _ALLOWED)
            raise self.fail("only the listed functions can be called", node, _ALLOWED)
        name = func.id
        if name not in FUNCTIONS:
            raise self.fail(f"unknown function '{name}'", node, _ALLOWED)
        if node.keywords:
            raise self.fail(f"{name}() takes no keyword arguments", node.keywords[0])
        args = [self.build(arg, depth) for arg in node.args]  # Starred is refused here
        if name in _SERIES_FUNCTIONS:
            if len(args) != 1 or args[0].kind != "series":
                raise self.fail(f"{name}() takes one series, e.g. {name}(val_loss)"
                                + _got(args), node)
        elif name == "abs":
            if len(args) != 1 or args[0].kind != "num":
                raise self.fail("abs() takes one number, e.g. abs(final.train_loss - final.val_loss)"
                                + _got(args), node)
        else:  # min, max: one series, or two or more numbers
            one_series = len(args) == 1 and args[0].kind == "series"
            numbers = len(args) >= 2 and all(arg.kind == "num" for arg in args)
            if not (one_series or numbers):
                raise self.fail(f"{name}() takes one series ({name}(val_loss)) or two or more "
                                f"numbers ({name}(final.val_loss, 1))" + _got(args), node)
        return _Call(node, self.unit, name, args)

    # -- arithmetic

    def _BinOp(self, node: ast.BinOp, depth: int) -> _Node:
        op_type = type(node.op)
        if op_type in _FORBIDDEN_BINOPS:
            symbol = _FORBIDDEN_BINOPS[op_type]
            raise self.unit.error(f"operator '{symbol}' is not allowed in a check",
                                  self.unit.find_after(node.left, symbol,
                                                       self.unit.offset_of(node.right)))
        op = _BINOPS[op_type]
        left = self._number(self.build(node.left, depth), op)
        right = self._number(self.build(node.right, depth), op)
        built = _BinOp(node, self.unit, op, left, right)
        if op == "**" and right.const:
            # A constant exponent is checked now: `9**9**9` is refused when collected.
            # (One that cannot be computed, like 1/0, fails when evaluated instead.)
            try:
                exponent = right.eval(_EMPTY_FRAME).value
            except ExprError:
                exponent = 0.0
            if math.isinf(exponent) or abs(exponent) > MAX_EXPONENT:
                raise self.fail(f"exponent {_format_threshold(exponent, True)} is too large "
                                f"(at most {MAX_EXPONENT} in absolute value)", node.right)
        return built

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> _Node:
        if isinstance(node.op, ast.Not):
            return _Not(node, self.unit, self._boolean(self.build(node.operand, depth), "not"))
        if isinstance(node.op, ast.Invert):
            raise self.fail("operator '~' is not allowed in a check", node)
        operand = self._number(self.build(node.operand, depth), "unary -")
        return _Neg(node, self.unit, operand, -1 if isinstance(node.op, ast.USub) else 1)

    def _number(self, built: _Node, context: str) -> _Node:
        if built.kind == "num":
            return built
        if built.kind == "series":
            raise self.fail(
                f"'{built.text}' is a series (one value per epoch), not a number", built.tree,
                f"reduce it first, e.g. last({built.text}), min({built.text}) or "
                f"mean({built.text})")
        raise self.fail(f"'{built.text}' is true/false, not a number ('{context}' needs numbers)",
                        built.tree)

    # -- truth

    def _Compare(self, node: ast.Compare, depth: int) -> _Node:
        operands_ast = [node.left, *node.comparators]
        ops = []
        for i, op in enumerate(node.ops):
            if type(op) in _FORBIDDEN_CMPOPS:
                symbol = _FORBIDDEN_CMPOPS[type(op)]
                raise self.unit.error(
                    f"operator '{symbol}' is not allowed in a check",
                    self.unit.find_after(operands_ast[i], symbol.split()[0],
                                         self.unit.offset_of(operands_ast[i + 1])))
            ops.append(_CMPOPS[type(op)])
        operands = [self._number(self.build(o, depth), ops[0]) for o in operands_ast]
        return _Compare(node, self.unit, operands, ops)

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> _Node:
        is_and = isinstance(node.op, ast.And)
        word = "and" if is_and else "or"
        operands = [self._boolean(self.build(v, depth), word) for v in node.values]
        return _BoolOp(node, self.unit, is_and, operands)

    def _boolean(self, built: _Node, context: str) -> _Node:
        if built.kind == "bool":
            return built
        raise self.fail(f"'{built.text}' is {_kind_words(built.kind)}, but '{context}' needs a "
                        "comparison", built.tree, f"e.g. {built.text} > 0")


def _kind_words(kind: str) -> str:
    return {"num": "a number", "series": "a series", "bool": "true/false"}.get(kind, kind)


def _got(args: list[_Node]) -> str:
    if not args:
        return "; got no arguments"
    return "; got " + ", ".join(_kind_words(a.kind) for a in args)


# Constant sub-expressions (an exponent) are evaluated at compile time against no data.
_EMPTY_FRAME = _Frame(EvalEnv({}, None))


class Check:
    """A compiled ``check:``; :meth:`evaluate` it against each run's :class:`EvalEnv`.

    ``names`` are the column names the check reads (before ``metrics:`` renames), so a
    caller can tell a user early which columns a gate file expects.
    """

    __slots__ = ("_root", "names", "source")

    def __init__(self, source: str, root: _Node, names: frozenset[str]) -> None:
        self.source = source
        self.names = names
        self._root = root

    def __repr__(self) -> str:
        return f"Check({self.source!r})"

    def evaluate(self, env: EvalEnv) -> Outcome:
        """The verdict on one run; raises :class:`ExprError` (only) when the data make the
        check impossible to evaluate: unknown column, empty series, division by zero, ...
        """
        try:
            verdict = self._root.eval(_Frame(env))
        except MlgatesError:
            raise
        except RecursionError:
            raise _error(self.source, "expression nested too deeply to evaluate") from None
        except MemoryError:
            raise _error(self.source, "out of memory evaluating the check") from None
        except Exception as exc:  # noqa: BLE001 - the contract: nothing but ExprError escapes
            raise _error(self.source, f"internal error evaluating the check "
                                      f"({type(exc).__name__}: {exc}); please report it") from None
        value = verdict.value
        return Outcome(verdict.state is True, value, verdict.where, verdict.needs, verdict.text)


def _error(source: str, message: str, offset: int = 0) -> ExprError:
    return ExprError(f"{message} at column {offset + 1}", offset=offset, source=source)


def compile_check(source: str) -> Check:
    """Parse and check a ``check:`` expression; raise :class:`ExprError` naming the column.

    >>> compile_check("open('x')")
    Traceback (most recent call last):
    pytest_mlgates.errors.ExprError: unknown function 'open' at column 1; allowed: first, ...
    """
    if not isinstance(source, str):
        raise _error("", f"a check must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise _error(source, f"check is {len(source)} characters long; "
                             f"at most {MAX_SOURCE_CHARS} are allowed")
    if not source.strip():
        raise _error(source, "check is empty")
    if "\x00" in source:
        raise _error(source, "a check cannot contain a NUL character", source.index("\x00"))
    try:
        return _compile(source)
    except MlgatesError:
        raise
    except SyntaxError as exc:
        raise _syntax_error(source, exc) from None
    except (RecursionError, MemoryError):
        raise _error(source, "expression nested too deeply") from None
    except ValueError as exc:  # null bytes (Python < 3.12), over-long integer literals
        raise _error(source, f"cannot parse the check ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the contract: nothing but ExprError escapes
        raise _error(source, f"internal error compiling the check "
                             f"({type(exc).__name__}: {exc}); please report it") from None


def _prepare(source: str) -> _Unit:
    """What to hand ``ast.parse``, and how its columns map back onto the user's text.

    A YAML block scalar (``check: >-``) may leave blank lines around the check and a
    multi-line check would need Python's implicit line joining; so the check is stripped,
    and wrapped in parentheses when it spans lines.
    """
    stripped = source.lstrip(" \t\r\n\f")
    lead = len(source) - len(stripped)
    text = stripped.rstrip()
    if "\n" in text or "\r" in text:
        return _Unit(f"({text}\n)", source, lead - 1)
    return _Unit(text, source, lead)


def _compile(source: str) -> Check:
    unit = _prepare(source)
    with warnings.catch_warnings():
        # `1and x` warns "invalid decimal literal"; a user sees our error or nothing.
        warnings.simplefilter("ignore")
        tree = ast.parse(unit.parsed, mode="eval")
    builder = _Builder(unit)
    root = builder.build(tree.body, 0)
    if root.kind != "bool":
        raise builder.fail(
            f"a check must be true or false, but '{root.text}' is {_kind_words(root.kind)}",
            tree.body, f"e.g. {root.text} < 0.5")
    return Check(source, root, frozenset(builder.names))


def _syntax_error(source: str, exc: SyntaxError) -> ExprError:
    message = (exc.msg or "invalid syntax").strip()
    if message.startswith("invalid syntax"):
        message = "invalid syntax"
    unit = _prepare(source)
    if not exc.offset:  # Python reports the end of the input as column 0
        stripped = source.rstrip()
        return unit.error("syntax error: the check ends too early", len(stripped) - unit.shift)
    offset = unit.char_offset(exc.lineno or 1, exc.offset - 1, in_bytes=False)
    return unit.error(f"syntax error: {message}", offset)
