"""The built-in gates: a registry of one line per gate, and the result types.

A gate is a function ``fn(run, params, ctx) -> GateResult`` that raises nothing but
:class:`~pytest_mlgates.errors.MlgatesError`, declared with ``@gate`` (``gates/params.py``)
in its module -- its one-line doc, its parameters, and its mutations for ``mlgates
prove`` beside it -- and named in :data:`GATES` (gate -> module).  The registry imports a
gate module when a gate file names the gate (its parameters are checked at collection);
the gate modules import nothing heavy at module level, and ``plugin.py`` imports none::

    >>> spec = get_gate("class_recall")
    >>> validate_params("class_recall", {"floor": 0.2})      # at collection time
    >>> spec.fn(open_run("runs/x"), {"floor": 0.2}, ctx).message
    'val_recall_3 = 0.000 at epoch 12 (final); needs > 0.2'
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlgates.errors import (
    GateFailure,
    MlgatesError,
    _one_line,
    is_missing_extra,
    missing_extra,
)
from pytest_mlgates.gates.params import DECLARED, Declaration, type_doc

if TYPE_CHECKING:
    from pytest_mlgates.rundir import Run

__all__ = [
    "GATES", "GATE_NAMES", "RESERVED_KEYS", "GateContext", "GateResult", "GateSpec", "declaration", "get_gate",
    "validate_params",
]


@dataclass
class GateResult:
    """A gate's verdict. ``message`` is the one line a user reads:
    ``"<what> = <value> <where>; needs <threshold>"``."""

    passed: bool
    value: str | None
    threshold: str | None
    message: str

    def __post_init__(self) -> None:
        # text from a run dir (a split named by a line break, a metric name) must not split
        # the user's line, as MlgatesError already ensures for errors
        self.message = _one_line(self.message)
        if self.value is not None:
            self.value = _one_line(self.value)
        if self.threshold is not None:
            self.threshold = _one_line(self.threshold)


@dataclass
class GateContext:
    """What a gate may know besides the run: where the code under test lives, the baseline,
    and ``subject()`` -- the user's code (the ``mlgates_subject`` fixture's
    :class:`~pytest_mlgates.PreflightSubject`, or None), asked for only by gates that need a
    model or real data."""

    rootdir: Path
    baseline: Run | None = None
    metric_aliases: dict[str, str] = field(default_factory=dict)
    strict: bool = False
    subject: Callable[[], Any] = field(default=lambda: None)


# --------------------------------------------------------------------------- the registry

#: Every built-in gate and the module that declares it (``@gate`` on a function of the
#: gate's name, with its parameters and its mutations for ``prove``): one line per gate.
GATES: dict[str, str] = {
    "finite_log": "pytest_mlgates.gates.log",
    "log_complete": "pytest_mlgates.gates.log",
    "converged": "pytest_mlgates.gates.learning",
    "class_recall": "pytest_mlgates.gates.learning",
    "generalization_gap": "pytest_mlgates.gates.learning",
    "memorization": "pytest_mlgates.gates.learning",
    "suspicious_perfection": "pytest_mlgates.gates.scores",
    "baseline": "pytest_mlgates.gates.scores",
    "best_checkpoints": "pytest_mlgates.gates.checkpoints",
    "resume_point": "pytest_mlgates.gates.checkpoints",
    "checkpoint_softmax": "pytest_mlgates.gates.rebuild",
    "reproduces": "pytest_mlgates.gates.rebuild",
    "shortcut": "pytest_mlgates.gates.shortcut",
    "provenance": "pytest_mlgates.gates.files",
    "plots": "pytest_mlgates.gates.files",
    "artifact": "pytest_mlgates.gates.files",
    "key_link": "pytest_mlgates.gates.files",
    "split_integrity": "pytest_mlgates.gates.files",
}

#: Keys of a criterion that belong to the plugin, not to the gate; ignored here.
RESERVED_KEYS = frozenset({"name", "gate", "stage", "description", "check", "truth"})

#: the built-in gates, sorted (lookups read GATES, which a test may extend)
GATE_NAMES: tuple[str, ...] = tuple(sorted(GATES))


@dataclass(frozen=True)
class GateSpec:
    """A gate as the plugin sees it. ``fn`` merges defaults, then runs the implementation."""

    name: str
    params: frozenset[str]
    defaults: dict[str, Any]
    doc: str
    _impl: Callable[..., GateResult]

    def fn(self, run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
        merged = dict(self.defaults)
        merged.update({k: v for k, v in params.items() if k not in RESERVED_KEYS})
        try:
            result = self._impl(run, merged, ctx)
        except MlgatesError:
            raise
        except RecursionError:
            raise GateFailure(f"gate {self.name}: input nested too deeply") from None
        except Exception as exc:
            if isinstance(exc, ImportError) and is_missing_extra(exc):
                # not a bug: torch, Pillow, scikit-learn are extras a user may not have
                raise missing_extra(exc, f"gate {self.name}") from None
            raise GateFailure(
                f"gate {self.name}: internal error {exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                " (please report this as a bug)"
            ) from exc
        return result


_SPECS: dict[tuple[str, str], GateSpec] = {}
_DECLARED: dict[tuple[str, str], Declaration] = {}


def _unknown(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {what} '{name}'{hint} (known: {', '.join(known)})"


def declaration(name: str) -> Declaration:
    """The ``@gate`` declaration of the gate called ``name`` (its module is imported on
    first use: the gate modules import nothing heavy at module level)."""
    module_name = GATES.get(name) if isinstance(name, str) else None
    if module_name is None:
        raise MlgatesError(_unknown(str(name), sorted(GATES), "gate"))
    declared = _DECLARED.get((name, module_name))
    if declared is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:  # a GATES line naming a module that is not there
            raise MlgatesError(f"gate {name}: cannot import {module_name} ({err})") from None
        # not isinstance: a pytester run may import gates/params.py afresh beside a module
        # that declared its gates with the previous one
        declared = getattr(getattr(module, name, None), DECLARED, None)
        if declared is None:
            raise MlgatesError(f"gate {name}: {module_name} has no @gate function named {name}")
        _DECLARED[(name, module_name)] = declared
    return declared


def get_gate(name: str) -> GateSpec:
    """The gate called ``name``, ready to run."""
    declared = declaration(name)
    key = (name, GATES[name])
    spec = _SPECS.get(key)
    if spec is None:
        spec = GateSpec(name, frozenset(declared.params),
                        {k: p.default for k, p in declared.params.items()}, declared.doc, declared.fn)
        _SPECS[key] = spec
    return spec


def gate_params(name: str) -> dict[str, str]:
    """``{parameter: type description}`` of a gate, for docs and error messages."""
    return {k: type_doc(p.check) for k, p in declaration(name).params.items()}


def validate_params(name: str, params: dict[str, Any]) -> None:
    """Check a criterion's parameters at collection time; one-line MlgatesError otherwise."""
    declared = declaration(name).params
    if not isinstance(params, dict):
        raise MlgatesError(f"gate {name}: parameters must be a mapping, got {type(params).__name__}")
    valid = sorted(declared)
    for key, value in params.items():
        if key in RESERVED_KEYS:
            continue
        if key not in declared:
            raise MlgatesError(f"gate {name}: " + _unknown(str(key), valid, "parameter").replace("(known:", "(valid:"))
        problem = declared[key].check(value)
        if problem:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise MlgatesError(f"gate {name}: parameter '{key}' {problem}, got {shown}")
    for key, param in declared.items():
        if param.required and params.get(key) is None:
            raise MlgatesError(f"gate {name}: parameter '{key}' is required")
