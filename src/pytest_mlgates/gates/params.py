"""How a gate is declared: its parameters' checkers, :class:`Param`, and :func:`gate`.

A gate module declares each gate on its function, beside the mutations ``mlgates prove``
aims at it, and ``gates/__init__.py``'s ``GATES`` names the module in one line::

    from pytest_mlgates.gates import params as p

    def finite_log_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
        ...

    @p.gate(doc="every logged value is finite (no NaN/Inf)",
            params={"columns": p.Param(p.strings)}, mutations=finite_log_mutations)
    def finite_log(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
        ...

A checker returns an error text (``"must be a number"``, shown after ``parameter 'x'``)
or None when the value is fine.  This module imports nothing of the plugin: the registry
and every gate module import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["DECLARED", "Declaration", "Param", "gate", "takes", "type_doc"]

Checker = Callable[[Any], str | None]

#: ``(a format's Mutations, the criterion's parameters) -> (mutations in tiers, note)``;
#: the first argument is a :class:`pytest_mlgates.formats._mutations.Mutations`.
MutationsFn = Callable[[Any, dict[str, Any]], tuple[list[Any], str]]

_Fn = TypeVar("_Fn", bound=Callable[..., Any])
_Check = TypeVar("_Check", bound=Checker)

#: the attribute :func:`gate` sets on a gate's function, and :func:`takes` on a checker
DECLARED = "__mlgates_gate__"
TAKES = "__mlgates_takes__"


# --------------------------------------------------------------------------- checkers


def takes(what: str) -> Callable[[_Check], _Check]:
    """Name what a checker takes (``"number >= 0"``), for docs and :func:`type_doc`."""
    def name(check: _Check) -> _Check:
        setattr(check, TAKES, what)
        return check

    return name


def type_doc(check: Checker) -> str:
    """What ``check`` takes, as :func:`takes` named it; ``"value"`` when unnamed."""
    return str(getattr(check, TAKES, "value"))


@takes("number")
def number(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) else "must be a number"


@takes("number >= 0")
def nonneg(v: Any) -> str | None:
    return number(v) or (None if v >= 0 else "must be >= 0")


@takes("positive integer")
def pos_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "must be a positive integer"


@takes("number in (0, 1)")
def probability(v: Any) -> str | None:
    return number(v) or (None if 0 < v < 1 else "must be a number between 0 and 1 (exclusive)")


@takes("number in (0, 1)")
def confidence(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else "must be a number in (0, 1), e.g. 0.95"


@takes("string")
def string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "must be a non-empty string"


@takes("true/false")
def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


@takes("min|max")
def mode(v: Any) -> str | None:
    return None if v in ("min", "max") else "must be 'min' or 'max'"


@takes("name or list of names")
def strings(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return None
    if isinstance(v, list) and v and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
        return None
    return "must be a name or a non-empty list of names"


@takes("package.module:ClassName")
def target(v: Any) -> str | None:
    if isinstance(v, str) and v.count(":") == 1:
        module, name = v.split(":")
        if module and all(p.isidentifier() for p in module.split(".")) and name.isidentifier():
            return None
    return "must be 'package.module:ClassName'"


@takes("list of ints")
def ints(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        return None
    return "must be a list of positive integers, e.g. [1, 1, 8, 8]"


@takes("names or {metric, mode}")
def tracked(v: Any) -> str | None:
    if strings(v) is None:
        return None
    if isinstance(v, list) and v and all(
        isinstance(x, str) or (isinstance(x, dict) and isinstance(x.get("metric"), str)
                               and set(x) <= {"metric", "mode"} and x.get("mode", "min") in ("min", "max"))
        for x in v
    ):
        return None
    return "must be a list of metric names or {metric, mode} mappings"


@takes("final|best|all")
def at(v: Any) -> str | None:
    return None if v in ("final", "best", "all") else "must be 'final', 'best' or 'all'"


@takes("mapping")
def mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else "must be a mapping"


@takes("{metric: {mode, abs, rel}}")
def baseline_metrics(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return None
    if not isinstance(v, dict) or not v:
        return "must be a mapping {metric: {mode, abs, rel}} or a list of metric names"
    for name, tol in v.items():
        if tol is None:
            continue
        if not isinstance(tol, dict) or not set(tol) <= {"mode", "abs", "rel"}:
            return f"entry '{name}' must be a mapping with keys mode, abs, rel"
        if "mode" in tol and mode(tol["mode"]):
            return f"entry '{name}': mode must be 'min' or 'max'"
        for k in ("abs", "rel"):
            if k in tol and nonneg(tol[k]):
                return f"entry '{name}': {k} must be a number >= 0"
    return None


@takes("softmax or mapping")
def loads(v: Any) -> str | None:
    if v in ("softmax",) or v is True:
        return None
    if isinstance(v, dict):
        unknown = set(v) - {"softmax", "model", "kwargs", "input_shape", "prefix"}
        if unknown:
            return f"has unknown key '{min(unknown)}' (valid: softmax, model, kwargs, input_shape, prefix)"
        if "model" in v and (not isinstance(v["model"], str) or ":" not in v["model"]):
            return "model must be 'package.module:ClassName'"
        if "input_shape" in v and ints(v["input_shape"]):
            return "input_shape must be a list of positive integers"
        if "kwargs" in v and not isinstance(v["kwargs"], dict):
            return "kwargs must be a mapping"
        return None
    return "must be 'softmax' or a mapping {softmax, model, kwargs, input_shape, prefix}"


# --------------------------------------------------------------------------- declaration


@dataclass(frozen=True)
class Param:
    """One parameter: its checker, the value the gate gets when the gate file gives none,
    and whether the gate file must give it (a required parameter has no default)."""

    check: Checker
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Declaration:
    """What :func:`gate` records on a gate's function."""

    name: str
    doc: str
    params: dict[str, Param]
    mutations: MutationsFn | None
    fn: Callable[..., Any]


def gate(*, doc: str, params: dict[str, Param], mutations: MutationsFn | None = None) -> Callable[[_Fn], _Fn]:
    """Declare the decorated function as the gate of its name: ``doc`` is its one line in
    the docs, ``params`` what a gate file may give it, ``mutations`` what ``prove`` does to
    a run copy to turn it RED where the run's format has no ``gate_<name>`` of its own."""
    def declare(fn: _Fn) -> _Fn:
        setattr(fn, DECLARED, Declaration(fn.__name__, doc, dict(params), mutations, fn))
        return fn

    return declare
