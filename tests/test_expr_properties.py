"""Property tests for the ``check:`` language (hypothesis).

(a) Random valid checks, generated as trees from the language's grammar, agree with a
    reference evaluator written here from the documented semantics -- it walks the same
    generated tree, never the interpreter's.
(b) Junk -- random text, and soups of the language's own tokens -- never makes
    ``compile_check`` or ``evaluate`` raise anything but ``ExprError``.
(c) Compiling is fast enough for a thousand criteria per collection.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_mlgates.errors import ExprError
from pytest_mlgates.expr import EvalEnv, compile_check

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

COLUMNS = ("a", "b", "c")
# Weighted by repetition; zz is never logged, so a check naming it cannot be evaluated.
NAMES = COLUMNS * 6 + ("epoch",) * 2 + ("zz",)
SERIES_FUNCTIONS = ("first", "last", "min", "max", "mean", "len", "argmin", "argmax")
OPS = ("+", "-", "*", "/", "//", "%", "**")
CMPS = ("<", "<=", ">", ">=", "==", "!=")

Tree = tuple[Any, ...]


class RefError(Exception):
    """The reference says: evaluating this check must fail."""


# --------------------------------------------------------------------------- the grammar


literals = st.one_of(
    st.integers(-5, 70),
    st.sampled_from([0.0, 0.5, 1.5, 2.0, 1e-3, 1e300, 64.0, 65.0]),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False),
)


@st.composite
def series_trees(draw: st.DrawFn, depth: int = 1) -> Tree:
    tree: Tree = ("col", draw(st.sampled_from(NAMES)))
    for _ in range(draw(st.integers(0, depth))):
        bound = st.none() | st.integers(-4, 4)
        tree = ("slice", tree, draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2, -1])))
    return tree


@st.composite
def num_trees(draw: st.DrawFn, depth: int) -> Tree:
    leaves = ["lit", "row", "red", "idx"]
    kind = draw(st.sampled_from(leaves + (["abs", "mm", "bin", "bin", "neg", "pow"] if depth > 0 else [])))
    if kind == "lit":
        return ("lit", draw(literals))
    if kind == "row":
        form = draw(st.sampled_from(["final", "best", "epoch"]))
        return ("row", form, draw(st.integers(0, 4)), draw(st.sampled_from(NAMES)))
    if kind == "red":
        return ("red", draw(st.sampled_from(SERIES_FUNCTIONS)), draw(series_trees()))
    if kind == "idx":
        return ("idx", draw(series_trees()), draw(st.integers(-3, 3)))
    if kind == "abs":
        return ("abs", draw(num_trees(depth - 1)))
    if kind == "mm":
        args = draw(st.lists(num_trees(depth - 1), min_size=2, max_size=3))
        return ("mm", draw(st.sampled_from(["min", "max"])), args)
    if kind == "neg":
        return ("neg", draw(num_trees(depth - 1)))
    if kind == "pow":  # exponents around the limit of 64, literal or measured
        exponent = draw(st.one_of(
            st.sampled_from([("lit", e) for e in (2, 0.5, -1, 63, 64, 65, -64, -65, 64.5)]),
            num_trees(0)))
        return ("bin", "**", draw(num_trees(depth - 1)), exponent)
    return ("bin", draw(st.sampled_from(OPS)), draw(num_trees(depth - 1)), draw(num_trees(depth - 1)))


@st.composite
def bool_trees(draw: st.DrawFn, depth: int = 2) -> Tree:
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp"] + (["and", "or", "not", "bool"] if depth > 0 else [])))
    if kind == "cmp":
        operands = draw(st.lists(num_trees(2), min_size=2, max_size=3))
        ops = [draw(st.sampled_from(CMPS)) for _ in operands[1:]]
        return ("cmp", operands, ops)
    if kind in ("and", "or"):
        return (kind, draw(st.lists(bool_trees(depth - 1), min_size=2, max_size=3)))
    if kind == "not":
        return ("not", draw(bool_trees(depth - 1)))
    return ("bool", draw(st.booleans()))


cells = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, 7.0, 1e300, -1e-300,
                     math.nan, math.inf, -math.inf]),
    st.floats(-10, 10),
)


@st.composite
def envs(draw: st.DrawFn) -> EvalEnv:
    rows = draw(st.integers(0, 6) | st.integers(3, 6))
    columns: dict[str, list[float]] = {
        name: draw(st.lists(cells, min_size=rows, max_size=rows)) for name in COLUMNS
    }
    numbering = draw(st.sampled_from(["from1", "from1", "from0", "every2", "none"]))
    if numbering != "none":
        start, step = {"from1": (1, 1), "from0": (0, 1), "every2": (2, 2)}[numbering]
        columns["epoch"] = [float(start + step * i) for i in range(rows)]
    best = draw(st.one_of(st.none(), st.integers(0, 4), st.integers(1, 3)))
    return EvalEnv(columns=columns, best_epoch=best)


# --------------------------------------------------------------------------- rendering


def render(tree: Tree) -> str:
    kind = tree[0]
    if kind == "col":
        return tree[1]
    if kind == "slice":
        _, inner, lo, hi, step = tree
        text = f"{'' if lo is None else lo}:{'' if hi is None else hi}"
        return f"{render(inner)}[{text}{'' if step is None else ':' + str(step)}]"
    if kind == "lit":
        value = tree[1]
        text = repr(value)
        return f"({text})" if text.startswith("-") else text
    if kind == "row":
        _, form, epoch, column = tree
        return f"epoch[{epoch}].{column}" if form == "epoch" else f"{form}.{column}"
    if kind == "red":
        return f"{tree[1]}({render(tree[2])})"
    if kind == "idx":
        return f"{render(tree[1])}[{tree[2]}]"
    if kind == "abs":
        return f"abs({render(tree[1])})"
    if kind == "mm":
        return f"{tree[1]}({', '.join(render(arg) for arg in tree[2])})"
    if kind == "neg":
        return f"(-{render(tree[1])})"
    if kind == "bin":
        return f"({render(tree[2])} {tree[1]} {render(tree[3])})"
    if kind == "cmp":
        operands, ops = tree[1], tree[2]
        text = render(operands[0])
        for op, operand in zip(ops, operands[1:]):
            text += f" {op} {render(operand)}"
        return f"({text})"
    if kind in ("and", "or"):
        return "(" + f" {kind} ".join(render(b) for b in tree[1]) + ")"
    if kind == "not":
        return f"(not {render(tree[1])})"
    if kind == "bool":
        return str(tree[1])
    raise AssertionError(kind)


# --------------------------------------------------------------------------- the reference


class Reference:
    """The documented semantics, written out plainly over the generated tree."""

    def __init__(self, env: EvalEnv) -> None:
        self.columns = {k: [float(v) for v in vs] for k, vs in env.columns.items()}
        rows = max((len(v) for v in self.columns.values()), default=0)
        self.epochs = self.columns.get("epoch", [float(i + 1) for i in range(rows)])
        self.best = env.best_epoch

    def column(self, name: str) -> list[float]:
        if name in self.columns:
            return self.columns[name]
        if name == "epoch":
            return self.epochs
        raise RefError(f"unknown column {name}")

    def series(self, tree: Tree) -> tuple[list[float], list[float]]:
        if tree[0] == "col":
            values = self.column(tree[1])
            return values, self.epochs[: len(values)]
        values, epochs = self.series(tree[1])
        cut = slice(tree[2], tree[3], tree[4])
        return values[cut], epochs[cut]

    def row(self, epoch: float) -> int:
        for index, value in enumerate(self.epochs):
            if value == epoch:
                return index
        raise RefError(f"no epoch {epoch}")

    def num(self, tree: Tree) -> float:
        kind = tree[0]
        if kind == "lit":
            return float(tree[1])
        if kind == "row":
            _, form, epoch, column = tree
            if form == "final":
                if not self.epochs:
                    raise RefError("empty log")
                index = len(self.epochs) - 1
            elif form == "best":
                if self.best is None:
                    raise RefError("best unknown")
                index = self.row(self.best)
            else:
                index = self.row(epoch)
            return self.column(column)[index]
        if kind == "red":
            values, epochs = self.series(tree[2])
            function = tree[1]
            if function == "len":
                return float(len(values))
            if not values:
                raise RefError("empty series")
            if function == "first":
                return values[0]
            if function == "last":
                return values[-1]
            if function == "mean":
                return sum(values) / len(values)
            if any(math.isnan(v) for v in values):
                return math.nan
            extreme = min(values) if function in ("min", "argmin") else max(values)
            if function in ("min", "max"):
                return extreme
            return epochs[values.index(extreme)]
        if kind == "idx":
            values, _ = self.series(tree[1])
            if not -len(values) <= tree[2] < len(values):
                raise RefError("index out of range")
            return values[tree[2]]
        if kind == "abs":
            return abs(self.num(tree[1]))
        if kind == "mm":
            args = [self.num(arg) for arg in tree[2]]
            if any(math.isnan(v) for v in args):
                return math.nan
            return min(args) if tree[1] == "min" else max(args)
        if kind == "neg":
            return -self.num(tree[1])
        if kind == "bin":
            a, b = self.num(tree[2]), self.num(tree[3])
            return arithmetic(tree[1], a, b)
        raise AssertionError(kind)

    def truth(self, tree: Tree) -> bool | None:
        kind = tree[0]
        if kind == "bool":
            return tree[1]
        if kind == "cmp":
            values = [self.num(o) for o in tree[1]]
            result: bool | None = True
            for op, a, b in zip(tree[2], values, values[1:]):
                pair = None if math.isnan(a) or math.isnan(b) else compare(op, a, b)
                result = kleene_and([result, pair])
            return result
        if kind == "and":
            seen: list[bool | None] = []
            for operand in tree[1]:
                seen.append(self.truth(operand))
                if seen[-1] is False:
                    break
            return kleene_and(seen)
        if kind == "or":
            seen = []
            for operand in tree[1]:
                seen.append(self.truth(operand))
                if seen[-1] is True:
                    break
            return True if True in seen else None if None in seen else False
        if kind == "not":
            inner = self.truth(tree[1])
            return None if inner is None else not inner
        raise AssertionError(kind)


def arithmetic(op: str, a: float, b: float) -> float:
    if op in ("/", "//", "%") and b == 0:
        raise RefError("division by zero")
    if op == "**":
        if math.isinf(b) or abs(b) > 64:
            raise RefError("exponent too large")
        try:
            result: float | complex = a**b
        except (ZeroDivisionError, OverflowError):
            raise RefError("pow") from None
        if isinstance(result, complex):
            raise RefError("complex")
        return float(result)
    return {"+": a + b, "-": a - b, "*": a * b}[op] if op in "+-*" else (
        a / b if op == "/" else a // b if op == "//" else a % b)


def compare(op: str, a: float, b: float) -> bool:
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]


def kleene_and(values: list[bool | None]) -> bool | None:
    return False if False in values else None if None in values else True


def is_constant(tree: Tree) -> bool:
    kind = tree[0]
    if kind == "lit":
        return True
    if kind in ("neg", "abs"):
        return is_constant(tree[1])
    if kind == "mm":
        return all(is_constant(arg) for arg in tree[2])
    if kind == "bin":
        return is_constant(tree[2]) and is_constant(tree[3])
    return False


def refused_at_compile(tree: Tree) -> bool:
    """The documented compile-time rule: a constant exponent above 64 is refused."""
    kind = tree[0]
    if kind == "bin" and tree[1] == "**" and is_constant(tree[3]):
        try:
            exponent = Reference(EvalEnv({}, None)).num(tree[3])
        except RefError:
            exponent = 0.0
        if math.isinf(exponent) or abs(exponent) > 64:
            return True
    children = [c for c in tree[1:] if isinstance(c, tuple)]
    for child in tree[1:]:
        if isinstance(child, list):
            children += [c for c in child if isinstance(c, tuple)]
    return any(refused_at_compile(child) for child in children)


def same_number(a: float | None, b: float) -> bool:
    if a is None:
        return False
    return (math.isnan(a) and math.isnan(b)) or a == b


# --------------------------------------------------------------------------- (a) agreement


@pytest.mark.slow
@SETTINGS
@given(tree=bool_trees(), env=envs())
def test_valid_checks_agree_with_the_reference(tree: Tree, env: EvalEnv) -> None:
    source = render(tree)
    if refused_at_compile(tree):
        try:
            compile_check(source)
        except ExprError as err:
            assert "exponent" in str(err)
            event("refused at compile time")
            return
        raise AssertionError(f"{source!r} should be refused at compile time")
    check = compile_check(source)  # a valid tree must compile
    reference = Reference(env)
    try:
        expected = reference.truth(tree)
    except RefError:
        try:
            outcome = check.evaluate(env)
        except ExprError as err:
            assert "internal error" not in str(err)
            event("evaluation error")
            return
        raise AssertionError(f"{source!r} should fail to evaluate, gave {outcome}")
    outcome = check.evaluate(env)
    event(f"evaluated: {expected}")
    assert outcome.passed is (expected is True), (source, outcome)
    assert "\n" not in outcome.text
    if tree[0] == "cmp":
        operands = tree[1]
        measured = next((o for o in operands if not is_constant(o)), operands[0])
        assert same_number(outcome.value, reference.num(measured)), (source, outcome)


# --------------------------------------------------------------------------- (b) junk


FIXED_ENVS = [
    EvalEnv({"epoch": [1.0, 2.0, 3.0], "val_loss": [0.5, math.nan, 0.2], "a": [1.0, 0.0, -1.0]}, 2),
    EvalEnv({}, None),
    EvalEnv({"a": []}, 7, metric_aliases={"val_loss": "a"}),
]

TOKENS = [
    "val_loss", "a", "epoch", "final", "best", ".", "[", "]", "(", ")", ":", ",", "-1", "0",
    "2", "1e308", "0.5", "9", "**", "*", "/", "//", "%", "+", "-", "<", "<=", "==", "!=", ">",
    "and", "or", "not", "True", "False", "None", *SERIES_FUNCTIONS, "abs", "__class__",
    "__import__", "'os'", "lambda", "x", "if", "else", "for", "in", "is", ":=", "@", "~",
    "|", "&", "^", "<<", "f'", "{", "}", "\n", "\t", "\\", "#", "é", "\x00", "'", '"', ";",
    "yield", "await", "*", "...", "1j", "0x10", "1_000", "10" * 30,
]


def assert_only_expr_errors(source: str) -> None:
    try:
        check = compile_check(source)
    except ExprError as err:
        check_error(err, source)
        return
    for env in FIXED_ENVS:
        try:
            outcome = check.evaluate(env)
        except ExprError as err:
            check_error(err, source)
            continue
        assert isinstance(outcome.passed, bool)
        assert "\n" not in outcome.text


def check_error(err: ExprError, source: str) -> None:
    message = str(err)
    assert "internal error" not in message, message
    assert "\n" not in message
    assert 0 <= err.offset <= len(source)
    assert f"at column {err.offset + 1}" in message


@SETTINGS
@given(st.text(max_size=80))
def test_random_text_raises_only_expr_errors(source: str) -> None:
    assert_only_expr_errors(source)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=25), st.sampled_from([" ", ""]))
def test_token_soup_raises_only_expr_errors(tokens: list[str], joiner: str) -> None:
    assert_only_expr_errors(joiner.join(tokens))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(tree=bool_trees(), cut=st.integers(0, 200))
def test_truncated_valid_checks_raise_only_expr_errors(tree: Tree, cut: int) -> None:
    source = render(tree)
    assert_only_expr_errors(source[: cut % (len(source) + 1)])


# Compile speed is bench/plugin_overhead.py's business (1,000 criteria collected), not a timed test.
