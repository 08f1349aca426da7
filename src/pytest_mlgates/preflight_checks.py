"""The built-in preflight checks: what must hold for the user's code *before* training.

Every check runs on a :class:`~pytest_mlgates.subject.PreflightSubject` (the
``mlgates_subject`` fixture: the user's model factory, real loaders, loss...).  A check
returns a one-line message when it passes and raises :class:`CheckFailed` (one line: what
was measured, where, what was needed) when it does not; a check the subject cannot feed
raises :class:`CheckSkipped` naming the field it needs.  The suite is built once per
subject and caches the expensive parts (one pass over each loader, the first batches)::

    >>> suite = PreflightSuite(subject)
    >>> suite.outcome("loss_at_init").message
    'loss at init 2.338 vs ln(10) = 2.303 (tolerance 1.15)'

Checks depend on each other (a forward pass on NaN data says nothing new), so every check
names the checks it needs in :data:`CHECKS`; when one of those did not pass, the dependent
is *skipped* naming the root cause instead of piling up as more RED.  Dependencies are
evaluated lazily in the process that needs them, so the order in which pytest (or xdist,
on several workers) runs the items does not matter.

torch and numpy are imported inside the checks only: the plugin imports this module when a
preflight item first runs.

This module is the registry and the runner: :data:`CHECKS` (dependencies, summaries,
parameters), :class:`PreflightSuite` (the subject's parts built once, each check run at
most once, dependencies first) and the root check ``subject_builds``.  The checks
themselves live by what they exercise: the data in ``preflight_data.py``, the model in
``preflight_model.py``; what they share with the suite in ``preflight_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlgates import preflight_data as data_checks
from pytest_mlgates import preflight_model as model_checks
from pytest_mlgates.preflight_contract import CheckFailed, CheckSkipped, Suite, closest, gist

__all__ = ["CHECKS", "CHECK_ORDER", "CheckFailed", "CheckSkipped", "Outcome", "PreflightSuite"]



@dataclass(frozen=True)
class CheckSpec:
    """One built-in check: the checks it needs, what it verifies, the parameters it takes."""

    depends: tuple[str, ...]
    summary: str
    params: dict[str, Any] = field(default_factory=dict)


#: Every built-in check in the order the suite runs them. Parameters are what a gate
#: file's ``preflight:`` section may set (see docs/preflight.md).
CHECKS: dict[str, CheckSpec] = {
    "subject_builds": CheckSpec((), "the mlgates_subject fixture gives a valid PreflightSubject"),
    "loaders_first_batch": CheckSpec(
        ("subject_builds",), "every split's real loader gives (x, y) batches, each within the time budget",
        {"timeout": None, "max_samples": 200_000},
    ),
    "no_nan_or_inf": CheckSpec(("loaders_first_batch",), "no NaN/Inf in any sample"),
    "no_missing_band": CheckSpec(
        ("loaders_first_batch",), "no image band constant within a sample; no feature constant over train"),
    "split_integrity": CheckSpec(("subject_builds",), "no sample id and no group id in two splits"),
    "classes_in_every_split": CheckSpec(("loaders_first_batch",), "every class has samples in every split"),
    "forward_softmax": CheckSpec(
        ("loaders_first_batch", "no_nan_or_inf"), "model forward gives one valid softmax row per sample"
    ),
    "loss_at_init": CheckSpec(("forward_softmax",), "the loss of the untrained model is near ln(C)",
                              {"tolerance": None}),
    "backward_finite": CheckSpec(
        ("forward_softmax",), "one real batch backward gives finite, non-zero gradients"
    ),
    "overfit_small_batch": CheckSpec(
        ("backward_finite",), "a small batch can be overfit, and zeroed inputs then do worse",
        {"samples": 16, "steps": 200, "max_loss": 0.05, "lr": 0.01},
    ),
    "logged_metric_names": CheckSpec(
        ("forward_softmax",), "every monitor is a key that one real validation pass (evaluate) returns"
    ),
    "grad_accumulation": CheckSpec(
        ("backward_finite",), "train_epoch steps the optimizer once per accumulate micro-batches, "
        "with the gradient of their mean loss", {"rtol": 1e-3},
    ),
    "shortcut_probe": CheckSpec(
        ("loaders_first_batch",), "a logistic regression on the central crop cannot predict the class",
        {"max_auc": 0.65, "radius": None},
    ),
    "run_dir_writable": CheckSpec(
        ("subject_builds",), "the run dir is writable with space to spare", {"min_free_mb": 1024}
    ),
}
CHECK_ORDER: tuple[str, ...] = tuple(CHECKS)

@dataclass(frozen=True)
class Outcome:
    """``status`` is ``passed``, ``failed`` or ``skipped``; ``root`` names the failed check
    that a skip traces back to (itself for a failure)."""

    status: str
    message: str
    root: str | None = None




class PreflightSuite:
    """The preflight checks of one subject, with everything expensive built once.

    ``subject`` is a :class:`~pytest_mlgates.subject.PreflightSubject`, or the exception
    the ``mlgates_subject`` fixture raised (then ``subject_builds`` fails with its line).
    ``timeout`` is the seconds each batch of a loader may take; ``run_dir`` where training
    would write (``--run-dir``; else the subject's ``run_dir``).
    """

    def __init__(self, subject: Any, *, timeout: float = 20.0, run_dir: Path | None = None) -> None:
        self.subject = subject
        self.timeout = float(timeout)
        self.run_dir = run_dir
        self._outcomes: dict[str, Outcome] = {}
        self.scans: dict[str, data_checks.SplitScan] = {}
        self.kept: dict[str, list[tuple[Any, Any]]] = {}

    # ------------------------------------------------------------------ running checks

    def outcome(self, name: str, params: dict[str, Any] | None = None) -> Outcome:
        """Run check `name` (once per suite for default parameters) and say how it went."""
        if name not in CHECKS:
            raise KeyError(f"unknown preflight check {name!r}{closest(name, list(CHECKS))}")
        params = dict(params or {})
        if not params and name in self._outcomes:
            return self._outcomes[name]
        result = self._run(name, params)
        if not params:
            self._outcomes[name] = result
        return result

    def _run(self, name: str, params: dict[str, Any]) -> Outcome:
        for dep in CHECKS[name].depends:
            dep_outcome = self.outcome(dep)
            if dep_outcome.status != "passed":
                if dep_outcome.root is None:  # a skipped dependency: skipped for its reason
                    return Outcome("skipped", dep_outcome.message, None)
                return Outcome("skipped", f"depends on {dep_outcome.root}, which failed", dep_outcome.root)
        merged = {**CHECKS[name].params, **params}
        try:
            with _one_torch_thread():
                message = _CHECK_FUNCTIONS[name](self, **merged)
        except CheckFailed as exc:
            return Outcome("failed", str(exc), name)
        except CheckSkipped as exc:
            return Outcome("skipped", str(exc), None)
        except Exception as exc:  # noqa: BLE001 - the user's code crashed: a failed check, in one line
            from pytest_mlgates.errors import is_missing_extra, missing_extra

            if is_missing_extra(exc):
                return Outcome("failed", str(missing_extra(exc, f"preflight {name}")), name)  # type: ignore[arg-type]
            return Outcome("failed", gist(exc), name)
        return Outcome("passed", message or "ok", None)


    # ------------------------------------------------------------------ the subject's parts

    @property
    def label(self) -> str:
        return getattr(self.subject, "name", "mlgates_subject")

    def new_model(self) -> Any:
        """A fresh model from the subject's factory, seeded: the same weights every time."""
        import torch

        torch.manual_seed(0)
        try:
            model = self.subject.model()
        except Exception as exc:  # noqa: BLE001 - user code
            raise CheckFailed(f"{self.label}.model(): {gist(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise CheckFailed(f"{self.label}.model(): returned a {type(model).__name__}; needs a torch.nn.Module")
        return model

    def first_batches(self, split: str = "train") -> list[tuple[Any, Any]]:
        """The first batches of a split as its loader gives them (kept by the scan)."""
        if split not in self.kept:
            self.outcome("loaders_first_batch")
        if not self.kept.get(split):
            raise CheckFailed(f"no batch of split '{split}' (see loaders_first_batch)")
        return self.kept[split]

    def first_batch(self, split: str = "train") -> tuple[Any, Any]:
        return self.first_batches(split)[0]

    def loss(self, logits: Any, y: Any) -> Any:
        return self.subject.loss(logits, y)

    def forward(self, model: Any, x: Any) -> Any:
        from pytest_mlgates.models import forward

        return forward(model, x)


def subject_builds(suite: Suite) -> str:
    """The root check: the ``mlgates_subject`` fixture gave a valid PreflightSubject."""
    from pytest_mlgates.subject import PreflightSubject

    subject = suite.subject
    if isinstance(subject, BaseException):
        from pytest_mlgates.errors import MlgatesError

        raise CheckFailed(str(subject) if isinstance(subject, MlgatesError)
                          else f"mlgates_subject: {gist(subject)}")
    if not isinstance(subject, PreflightSubject):
        raise CheckFailed(f"mlgates_subject: returned a {type(subject).__name__}; needs a "
                          "pytest_mlgates.PreflightSubject")
    subject.validate()  # fields may have been changed after construction
    splits = ", ".join(subject.loaders)
    return f"{subject.name}: {subject.num_classes} classes, splits {splits}"


#: What runs each check of :data:`CHECKS`: ``fn(suite, **params) -> message``.
_CHECK_FUNCTIONS: dict[str, Callable[..., str]] = {
    "subject_builds": subject_builds,
    "loaders_first_batch": data_checks.loaders_first_batch,
    "no_nan_or_inf": data_checks.no_nan_or_inf,
    "no_missing_band": data_checks.no_missing_band,
    "split_integrity": data_checks.split_integrity,
    "classes_in_every_split": data_checks.classes_in_every_split,
    "forward_softmax": model_checks.forward_softmax,
    "loss_at_init": model_checks.loss_at_init,
    "backward_finite": model_checks.backward_finite,
    "overfit_small_batch": model_checks.overfit_small_batch,
    "logged_metric_names": model_checks.logged_metric_names,
    "grad_accumulation": model_checks.grad_accumulation,
    "shortcut_probe": data_checks.shortcut_probe,
    "run_dir_writable": model_checks.run_dir_writable,
}
assert set(_CHECK_FUNCTIONS) == set(CHECKS), "every check in CHECKS has one function"


class _one_torch_thread:
    """Run a check on one intra-op thread: these models are tiny, and on a shared 2-core
    machine a second thread makes each small step about ten times slower, not faster."""

    def __enter__(self) -> None:
        import sys

        self._torch = sys.modules.get("torch")
        if self._torch is not None:
            self._threads = self._torch.get_num_threads()
            self._torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self._torch is not None:
            self._torch.set_num_threads(self._threads)

