"""The built-in gates: a registry that is cheap to import, and the result types.

Collection only needs names and parameter checks, so this module knows every gate's
parameters without importing the module that implements it (``log.py``, ``files.py``,
``checkpoints.py``, ``shortcut.py``); the implementation is imported when a gate first
runs. A gate is a function ``fn(run, params, ctx) -> GateResult`` that raises nothing but
:class:`~pytest_mlgates.errors.MlgatesError`::

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

if TYPE_CHECKING:
    from pytest_mlgates.rundir import Run

__all__ = [
    "GATE_NAMES", "RESERVED_KEYS", "GateContext", "GateResult", "GateSpec", "get_gate", "validate_params",
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


# --------------------------------------------------------------------------- parameter types
# Each checker returns an error text ("must be ...") or None when the value is fine.


def _number(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) else "must be a number"


def _nonneg(v: Any) -> str | None:
    return _number(v) or (None if v >= 0 else "must be >= 0")


def _pos_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "must be a positive integer"


def _probability(v: Any) -> str | None:
    return _number(v) or (None if 0 < v < 1 else "must be a number between 0 and 1 (exclusive)")


def _confidence(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else "must be a number in (0, 1), e.g. 0.95"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "must be a non-empty string"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _mode(v: Any) -> str | None:
    return None if v in ("min", "max") else "must be 'min' or 'max'"


def _strings(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return None
    if isinstance(v, list) and v and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
        return None
    return "must be a name or a non-empty list of names"


def _target(v: Any) -> str | None:
    if isinstance(v, str) and v.count(":") == 1:
        module, name = v.split(":")
        if module and all(p.isidentifier() for p in module.split(".")) and name.isidentifier():
            return None
    return "must be 'package.module:ClassName'"


def _ints(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        return None
    return "must be a list of positive integers, e.g. [1, 1, 8, 8]"


def _tracked(v: Any) -> str | None:
    if _strings(v) is None:
        return None
    if isinstance(v, list) and v and all(
        isinstance(x, str) or (isinstance(x, dict) and isinstance(x.get("metric"), str)
                               and set(x) <= {"metric", "mode"} and x.get("mode", "min") in ("min", "max"))
        for x in v
    ):
        return None
    return "must be a list of metric names or {metric, mode} mappings"


def _at(v: Any) -> str | None:
    return None if v in ("final", "best", "all") else "must be 'final', 'best' or 'all'"


def _mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else "must be a mapping"


def _baseline_metrics(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return None
    if not isinstance(v, dict) or not v:
        return "must be a mapping {metric: {mode, abs, rel}} or a list of metric names"
    for name, tol in v.items():
        if tol is None:
            continue
        if not isinstance(tol, dict) or not set(tol) <= {"mode", "abs", "rel"}:
            return f"entry '{name}' must be a mapping with keys mode, abs, rel"
        if "mode" in tol and _mode(tol["mode"]):
            return f"entry '{name}': mode must be 'min' or 'max'"
        for k in ("abs", "rel"):
            if k in tol and _nonneg(tol[k]):
                return f"entry '{name}': {k} must be a number >= 0"
    return None


def _loads(v: Any) -> str | None:
    if v in ("softmax",) or v is True:
        return None
    if isinstance(v, dict):
        unknown = set(v) - {"softmax", "model", "kwargs", "input_shape", "prefix"}
        if unknown:
            return f"has unknown key '{min(unknown)}' (valid: softmax, model, kwargs, input_shape, prefix)"
        if "model" in v and (not isinstance(v["model"], str) or ":" not in v["model"]):
            return "model must be 'package.module:ClassName'"
        if "input_shape" in v and _ints(v["input_shape"]):
            return "input_shape must be a list of positive integers"
        if "kwargs" in v and not isinstance(v["kwargs"], dict):
            return "kwargs must be a mapping"
        return None
    return "must be 'softmax' or a mapping {softmax, model, kwargs, input_shape, prefix}"


_TYPE_DOC: dict[Callable[[Any], str | None], str] = {
    _number: "number", _nonneg: "number >= 0", _probability: "number in (0, 1)",
    _confidence: "number in (0, 1)", _pos_int: "positive integer", _string: "string",
    _bool: "true/false", _mode: "min|max", _strings: "name or list of names", _ints: "list of ints",
    _tracked: "names or {metric, mode}", _at: "final|best|all", _mapping: "mapping",
    _baseline_metrics: "{metric: {mode, abs, rel}}", _loads: "softmax or mapping",
    _target: "package.module:ClassName",
}


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class _Entry:
    module: str
    function: str
    params: dict[str, Callable[[Any], str | None]]
    defaults: dict[str, Any]
    doc: str


_SOFTMAX_PARAMS = {"checkpoint": _string, "model": _target, "kwargs": _mapping,
                   "input_shape": _ints, "prefix": _string, "samples": _pos_int}

_REGISTRY: dict[str, _Entry] = {
    "finite_log": _Entry("log", "finite_log", {"columns": _strings}, {"columns": None},
                         "every logged value is finite (no NaN/Inf)"),
    "log_complete": _Entry("log", "log_complete", {"columns": _strings}, {"columns": None},
                           "the training log has every column and every epoch, and agrees with metric_history.json"),
    "converged": _Entry("log", "converged",
                        {"metric": _string, "mode": _mode, "min_improvement": _nonneg},
                        {"metric": "val_loss", "mode": None, "min_improvement": 0.1},
                        "the best value improves on the first epoch by a relative margin"),
    "class_recall": _Entry("log", "class_recall",
                           {"floor": _number, "classes": _strings, "columns": _strings, "at": _at,
                            "confidence": _confidence},
                           {"floor": 0.0, "classes": None, "columns": "val_recall_*", "at": "final",
                            "confidence": None},
                           "every class's recall (with confidence:, its lower confidence bound from the "
                           "counts) is strictly above a floor"),
    "generalization_gap": _Entry("log", "generalization_gap",
                                 {"train": _string, "val": _string, "max_gap": _nonneg, "at": _at},
                                 {"train": "train_accuracy", "val": "val_accuracy", "max_gap": 0.1, "at": "final"},
                                 "train and val metrics at the final epoch are within max_gap"),
    "memorization": _Entry("log", "memorization",
                           {"train_loss": _string, "val_loss": _string, "max_rise": _nonneg,
                            "min_train_ratio": _nonneg, "train_accuracy": _string, "val_accuracy": _string,
                            "max_accuracy_gap": _nonneg, "perfect": _number},
                           {"train_loss": "train_loss", "val_loss": "val_loss", "max_rise": 0.5,
                            "min_train_ratio": 0.5, "train_accuracy": "train_accuracy",
                            "val_accuracy": "val_accuracy", "max_accuracy_gap": 0.2, "perfect": 0.999},
                           "the model did not memorize the training set while val got worse"),
    "suspicious_perfection": _Entry("log", "suspicious_perfection",
                                    {"metrics": _strings, "at": _number, "samples": _pos_int,
                                     "honest": _probability, "confidence": _probability},
                                    {"metrics": None, "at": 1.0, "samples": None, "honest": None,
                                     "confidence": 0.95},
                                    "no val accuracy/AUROC/F1 reaches a perfect score on enough samples "
                                    "to make it implausible for an honest model (leak smell)"),
    "baseline": _Entry("log", "baseline", {"metrics": _baseline_metrics},
                       {"metrics": None},
                       "no metric is worse than the --baseline-run's by more than its tolerance"),
    "best_checkpoints": _Entry("checkpoints", "best_checkpoints", {"metrics": _tracked}, {"metrics": None},
                               "one best_<metric>.pt per tracked metric, holding the log's best epoch and value"),
    "resume_point": _Entry("checkpoints", "resume_point", {"path": _string}, {"path": "checkpoints/last.pt"},
                           "checkpoints/last.pt can resume the run: full state, at the last logged epoch"),
    "checkpoint_softmax": _Entry("checkpoints", "checkpoint_softmax", dict(_SOFTMAX_PARAMS),
                                 {"checkpoint": None, "model": None, "kwargs": None, "input_shape": None,
                                  "prefix": None, "samples": 16},
                                 "a checkpoint loads into its model and gives a valid softmax"),
    "reproduces": _Entry("checkpoints", "reproduces",
                         {"checkpoint": _strings, "tolerance": _nonneg, "split": _string},
                         {"checkpoint": None, "tolerance": 1e-4, "split": "val"},
                         "re-evaluating a best checkpoint reproduces the logged value of its metric"),
    "shortcut": _Entry("shortcut", "shortcut",
                       {"region": _string, "radius": _number, "max_auc": _number, "max_drop": _number,
                        "split": _string, "checkpoint": _string},
                       {"region": "core", "radius": 5, "max_auc": 0.65, "max_drop": 0.15, "split": "train",
                        "checkpoint": None},
                       "the model does not rely on a shortcut in the image core"),
    "provenance": _Entry("files", "provenance", {"allow_defaults": _bool}, {"allow_defaults": False},
                         "launched from an experiment config through the entry point; config hash matches"),
    "plots": _Entry("files", "plots", {"files": _strings, "min_size": _pos_int},
                    {"files": ["plots/loss_curve.png", "plots/recall_curve.png"], "min_size": 100},
                    "every plot is a real, non-blank PNG"),
    "artifact": _Entry("files", "artifact",
                       {"path": _string, "contains": _string, "loads": _loads, "provides": _string},
                       {"path": None, "contains": None, "loads": None, "provides": None},
                       "a file exists in the run dir (optionally containing text or loading as a model)"),
    "key_link": _Entry("files", "key_link", {"from": _string, "to": _string, "pattern": _string},
                       {"from": None, "to": None, "pattern": None},
                       "an artifact exists and the code that makes it contains the pattern"),
    "split_integrity": _Entry("files", "split_integrity",
                              {"path": _string, "splits": _strings, "groups": _string},
                              {"path": None, "splits": None, "groups": "groups"},
                              "no sample index or group id appears in two splits"),
}

# Required parameters (no usable default).
_REQUIRED: dict[str, tuple[str, ...]] = {"artifact": ("path",), "key_link": ("from", "to")}

#: Keys of a criterion that belong to the plugin, not to the gate; ignored here.
RESERVED_KEYS = frozenset({"name", "gate", "stage", "description", "check", "truth"})

GATE_NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))


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


_SPECS: dict[str, GateSpec] = {}


def _unknown(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {what} '{name}'{hint} (known: {', '.join(known)})"


def get_gate(name: str) -> GateSpec:
    """The gate called ``name``; its implementing module is imported on first use."""
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise MlgatesError(_unknown(str(name), list(GATE_NAMES), "gate"))
    spec = _SPECS.get(name)
    if spec is None:
        module = importlib.import_module(f"pytest_mlgates.gates.{entry.module}")
        spec = GateSpec(name, frozenset(entry.params), dict(entry.defaults), entry.doc,
                        getattr(module, entry.function))
        _SPECS[name] = spec
    return spec


def gate_params(name: str) -> dict[str, str]:
    """``{parameter: type description}`` of a gate, for docs and error messages."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise MlgatesError(_unknown(str(name), list(GATE_NAMES), "gate"))
    return {p: _TYPE_DOC.get(check, "value") for p, check in entry.params.items()}


def validate_params(name: str, params: dict[str, Any]) -> None:
    """Check a criterion's parameters at collection time; one-line MlgatesError otherwise."""
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise MlgatesError(_unknown(str(name), list(GATE_NAMES), "gate"))
    if not isinstance(params, dict):
        raise MlgatesError(f"gate {name}: parameters must be a mapping, got {type(params).__name__}")
    valid = sorted(entry.params)
    for key, value in params.items():
        if key in RESERVED_KEYS:
            continue
        if key not in entry.params:
            raise MlgatesError(f"gate {name}: " + _unknown(str(key), valid, "parameter").replace("(known:", "(valid:"))
        problem = entry.params[key](value)
        if problem:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise MlgatesError(f"gate {name}: parameter '{key}' {problem}, got {shown}")
    for key in _REQUIRED.get(name, ()):
        if params.get(key) is None:
            raise MlgatesError(f"gate {name}: parameter '{key}' is required")
