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
"""

from __future__ import annotations

import difflib
import math
import queue
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHECKS", "CHECK_ORDER", "CheckFailed", "CheckSkipped", "Outcome", "PreflightSuite"]


class CheckFailed(Exception):
    """A preflight check that did not hold; ``str()`` is the one line a user reads."""


class CheckSkipped(Exception):
    """A check that does not apply (an image probe on tabular data, a field not given)."""


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

#: Images kept per split for the shortcut probe (enough for a cross-validated AUC).
_PROBE_SAMPLES = 4000


@dataclass(frozen=True)
class Outcome:
    """``status`` is ``passed``, ``failed`` or ``skipped``; ``root`` names the failed check
    that a skip traces back to (itself for a failure)."""

    status: str
    message: str
    root: str | None = None


@dataclass
class _SplitScan:
    """What one pass over a split's loader found."""

    samples: int = 0
    batches: int = 0
    nonfinite: list[int] = field(default_factory=list)  # positions, in loader order
    dead_band: list[int] = field(default_factory=list)  # positions of images with a constant band
    labels: dict[int, int] = field(default_factory=dict)  # class -> count
    bad_labels: list[Any] = field(default_factory=list)
    feature_min: Any = None  # tabular: per-feature min / max
    feature_max: Any = None
    images: list[Any] = field(default_factory=list)  # up to _PROBE_SAMPLES (N, C, H, W) arrays
    image_labels: list[Any] = field(default_factory=list)
    truncated: bool = False


def _first(items: Any, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


def _closest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _gist(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        self._scans: dict[str, _SplitScan] = {}
        self._first: dict[str, list[tuple[Any, Any]]] = {}

    # ------------------------------------------------------------------ running checks

    def outcome(self, name: str, params: dict[str, Any] | None = None) -> Outcome:
        """Run check `name` (once per suite for default parameters) and say how it went."""
        if name not in CHECKS:
            raise KeyError(f"unknown preflight check {name!r}{_closest(name, list(CHECKS))}")
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
                message = getattr(self, f"check_{name}")(**merged)
        except CheckFailed as exc:
            return Outcome("failed", str(exc), name)
        except CheckSkipped as exc:
            return Outcome("skipped", str(exc), None)
        except Exception as exc:  # noqa: BLE001 - the user's code crashed: a failed check, in one line
            from pytest_mlgates.errors import is_missing_extra, missing_extra

            if is_missing_extra(exc):
                return Outcome("failed", str(missing_extra(exc, f"preflight {name}")), name)  # type: ignore[arg-type]
            return Outcome("failed", _gist(exc), name)
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
            raise CheckFailed(f"{self.label}.model(): {_gist(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise CheckFailed(f"{self.label}.model(): returned a {type(model).__name__}; needs a torch.nn.Module")
        return model

    def first_batches(self, split: str = "train") -> list[tuple[Any, Any]]:
        """The first batches of a split as its loader gives them (kept by the scan)."""
        if split not in self._first:
            self.outcome("loaders_first_batch")
        if not self._first.get(split):
            raise CheckFailed(f"no batch of split '{split}' (see loaders_first_batch)")
        return self._first[split]

    def first_batch(self, split: str = "train") -> tuple[Any, Any]:
        return self.first_batches(split)[0]

    def loss(self, logits: Any, y: Any) -> Any:
        return self.subject.loss(logits, y)

    # ------------------------------------------------------------------ the checks

    def check_subject_builds(self) -> str:
        from pytest_mlgates.subject import PreflightSubject

        subject = self.subject
        if isinstance(subject, BaseException):
            from pytest_mlgates.errors import MlgatesError

            raise CheckFailed(str(subject) if isinstance(subject, MlgatesError)
                              else f"mlgates_subject: {_gist(subject)}")
        if not isinstance(subject, PreflightSubject):
            raise CheckFailed(f"mlgates_subject: returned a {type(subject).__name__}; needs a "
                              "pytest_mlgates.PreflightSubject")
        subject.validate()  # fields may have been changed after construction
        splits = ", ".join(subject.loaders)
        return f"{subject.name}: {subject.num_classes} classes, splits {splits}"

    def check_loaders_first_batch(self, timeout: float | None = None, max_samples: int = 200_000) -> str:
        budget = self.timeout if timeout is None else float(timeout)
        sizes = []
        for split, loader in self.subject.loaders.items():
            scan = self._scan(split, loader, budget, int(max_samples))
            if scan.samples == 0:
                raise CheckFailed(f"{self.label}.loaders[{split!r}] gave no samples")
            more = f", first {scan.samples} checked" if scan.truncated else ""
            sizes.append(f"{split} {scan.samples}{more}")
        return f"every batch arrived within {budget:g} s: " + ", ".join(sizes)

    def _scan(self, split: str, loader: Any, budget: float, max_samples: int) -> _SplitScan:
        """One pass over a loader (each batch within ``budget`` s), keeping what checks need."""
        import numpy as np

        scan = _SplitScan()
        kept: list[tuple[Any, Any]] = []
        where = f"{self.label}.loaders[{split!r}]"
        for index, batch in enumerate(_batches_within(loader, budget, where)):
            x, y = _pair(batch, where, index)
            xs = _arrays(x)
            y_np = _as_numpy(y)
            if y_np is None or y_np.ndim != 1:
                raise CheckFailed(f"{where} batch {index}: labels of shape "
                                  f"{getattr(y, 'shape', type(y).__name__)}; needs a 1-d tensor of class indices")
            n = len(y_np)
            if any(len(a) != n for a in xs.values()):
                raise CheckFailed(f"{where} batch {index}: {n} labels for inputs of "
                                  f"{[a.shape[0] for a in xs.values()]} samples")
            if len(kept) < 64:
                kept.append((x, y))
            if y_np.dtype.kind not in "iu" and not (y_np.dtype.kind == "f" and np.all(np.mod(y_np, 1) == 0)):
                scan.bad_labels.extend(y_np[:3].tolist())
            else:
                values, counts = np.unique(y_np.astype(np.int64), return_counts=True)
                for v, c in zip(values.tolist(), counts.tolist()):
                    scan.labels[v] = scan.labels.get(v, 0) + c
            for name, a in xs.items():
                if a.dtype.kind != "f":
                    continue
                flat = a.reshape(n, -1)
                bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
                scan.nonfinite.extend((scan.samples + bad).tolist())
                if a.ndim == 4 and name == "x":
                    with np.errstate(invalid="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band
                        bands = a.reshape(n, a.shape[1], -1)
                        dead = ~(np.nanmax(bands, axis=2) > np.nanmin(bands, axis=2))
                    scan.dead_band.extend((scan.samples + np.flatnonzero(dead.any(axis=1))).tolist())
                    room = _PROBE_SAMPLES - sum(len(i) for i in scan.images)
                    if room > 0:
                        scan.images.append(a[:room])
                        scan.image_labels.append(y_np[:room])
                elif a.ndim == 2 and name == "x":
                    with np.errstate(invalid="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
                        lo, hi = np.nanmin(a, axis=0), np.nanmax(a, axis=0)
                    scan.feature_min = lo if scan.feature_min is None else np.fmin(scan.feature_min, lo)
                    scan.feature_max = hi if scan.feature_max is None else np.fmax(scan.feature_max, hi)
            scan.samples += n
            scan.batches += 1
            if scan.samples >= max_samples:
                scan.truncated = True
                break
        self._scans[split] = scan
        self._first[split] = kept
        return scan

    def _splits_report(self, field_name: str, what: str) -> str | None:
        """None when no split has a bad sample; else raise one line: how many, where."""
        parts, total, seen = [], 0, 0
        for split, scan in self._scans.items():
            hits = getattr(scan, field_name)
            seen += scan.samples
            if hits:
                total += len(hits)
                parts.append(f"{split}: {len(hits)}, first at positions {_first(sorted(hits))}")
        if total:
            raise CheckFailed(f"{total} of {seen} samples {what} ({'; '.join(parts)}; positions in loader order)")
        return None

    def check_no_nan_or_inf(self) -> str:
        self._splits_report("nonfinite", "with NaN/Inf")
        seen = sum(s.samples for s in self._scans.values())
        return f"all {seen} samples finite"

    def check_no_missing_band(self) -> str:
        import numpy as np

        self._splits_report("dead_band", "with a constant (missing) band")
        train = self._scans.get("train")
        if train is not None and train.feature_min is not None:
            dead = ~(train.feature_max > train.feature_min)
            # A feature constant in every split (a digit's corner pixel) carries nothing but is
            # no fault; one constant over train that varies elsewhere is a dead input in the
            # data the model learns from.
            varies = np.zeros_like(dead)
            for split, scan in self._scans.items():
                if split != "train" and scan.feature_min is not None and len(scan.feature_min) == len(dead):
                    varies |= (scan.feature_max > scan.feature_min) | (scan.feature_min != train.feature_min)
            bad = np.flatnonzero(dead & varies)
            if len(bad):
                others = ", ".join(s for s in self._scans if s != "train")
                raise CheckFailed(f"{len(bad)} of {len(dead)} features constant over the train split but not in "
                                  f"{others}: columns {_first(bad.tolist())} (a dead input in training)")
            note = f"; {int(dead.sum())} constant in every split" if dead.any() else ""
            return f"{len(dead)} features: none constant over train alone{note}"
        seen = sum(s.samples for s in self._scans.values())
        return f"every band of all {seen} samples varies"

    def check_split_integrity(self) -> str:
        import numpy as np

        ids, groups = self.subject.sample_ids, self.subject.groups
        if ids is None and groups is None:
            raise CheckSkipped(f"needs {self.label}.sample_ids (and optionally groups): "
                               "{split: ids} to check that no sample is in two splits")
        problems = []
        counts = []
        for kind, table in (("sample ids", ids), ("group ids", groups)):
            if table is None:
                continue
            names = list(table)
            values = {s: np.unique(np.asarray(list(table[s]))) for s in names}
            counts.append(f"{sum(len(v) for v in values.values())} {kind}")
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    shared = np.intersect1d(values[a], values[b])
                    if len(shared):
                        problems.append(f"{len(shared)} {kind} in {a} and {b} {_first(shared.tolist())}")
        if problems:
            raise CheckFailed("; ".join(problems))
        return ", ".join(counts) + ", each in one split"

    def check_classes_in_every_split(self) -> str:
        k = self.subject.num_classes
        missing = []
        for split, scan in self._scans.items():
            if scan.bad_labels:
                raise CheckFailed(f"{self.label}.loaders[{split!r}]: labels {_first(scan.bad_labels, 3)} are not "
                                  "class indices; needs integers 0..num_classes-1")
            outside = sorted(c for c in scan.labels if not 0 <= c < k)
            if outside:
                raise CheckFailed(f"{self.label}.loaders[{split!r}]: label {outside[0]} outside 0..{k - 1} "
                                  f"(num_classes {k})")
            absent = [c for c in range(k) if c not in scan.labels]
            if absent:
                missing.append(f"{split} lacks class {', '.join(map(str, absent))}")
        if missing:
            raise CheckFailed("; ".join(missing))
        return f"all {k} classes in every split ({', '.join(self._scans)})"

    def _forward(self, model: Any, x: Any) -> Any:
        from pytest_mlgates.models import forward

        return forward(model, x)

    def check_forward_softmax(self) -> str:
        import torch

        x, _ = self.first_batch("train")
        model = self.new_model()
        model.eval()
        with torch.no_grad():
            out = self._forward(model, _to(x, model))
        n, k = _batch_len(x), self.subject.num_classes
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or tuple(out.shape) != (n, k):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CheckFailed(f"model output {shape} for a batch of {n}; needs ({n}, {k}) logits")
        bad_rows = int((~torch.isfinite(out)).any(dim=1).sum())
        if bad_rows:
            raise CheckFailed(f"model gives NaN/Inf logits in {bad_rows} of {n} rows of the first train "
                              "batch; softmax is not a distribution")
        probs = torch.softmax(out.double(), dim=1)
        worst = float((probs.sum(dim=1) - 1.0).abs().max())
        if not bool(torch.isfinite(probs).all()) or worst > 1e-6:
            raise CheckFailed(f"softmax rows sum to 1 ± {worst:.2g}; needs ± 1e-6")
        return f"({n}, {k}) finite logits; softmax rows sum to 1 ± {worst:.1g}"

    def check_loss_at_init(self, tolerance: float | None = None) -> str:
        import torch

        x, y = self.first_batch("train")
        k = self.subject.num_classes
        model = self.new_model()
        model.train()
        with torch.no_grad():
            loss = float(self.loss(self._forward(model, _to(x, model)), _to(y, model)))
        expected = math.log(k)
        # wide on purpose: BatchNorm and max-pooled heads move a healthy init by a few tenths;
        # a broken one (logits x100, a wrong target encoding) is off by several ln(C)
        tol = max(0.75, 0.5 * expected) if tolerance is None else float(tolerance)
        text = f"loss at init {loss:.3f} vs ln({k}) = {expected:.3f}"
        if not math.isfinite(loss) or abs(loss - expected) > tol:
            raise CheckFailed(f"{text}; needs within {tol:.2f} (first train batch)")
        return f"{text} (tolerance {tol:.2f})"

    def check_backward_finite(self) -> str:
        import torch

        x, y = self.first_batch("train")
        model = self.new_model()
        model.train()
        model.zero_grad(set_to_none=True)
        loss = self.loss(self._forward(model, _to(x, model)), _to(y, model))
        loss.backward()
        missing, nonfinite, zero, n = [], [], [], 0
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            n += 1
            if p.grad is None:
                missing.append(name)
            elif not bool(torch.isfinite(p.grad).all()):
                nonfinite.append(name)
            elif float(p.grad.abs().max()) == 0.0:
                zero.append(name)
        problems = [f"{label}: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
                    for label, names in (("no gradient", missing), ("NaN/Inf gradient", nonfinite),
                                         ("all-zero gradient", zero)) if names]
        if problems:
            raise CheckFailed(f"{sum(map(len, (missing, nonfinite, zero)))} of {n} parameters: {'; '.join(problems)}")
        return f"finite, non-zero gradients for all {n} parameters (loss {float(loss.detach()):.3f})"

    def check_overfit_small_batch(self, samples: int = 16, steps: int = 200, max_loss: float = 0.05,
                                  lr: float = 0.01) -> str:
        import torch

        x, y = _take(self.first_batches("train"), int(samples))
        model = self.new_model()
        x, y = _to(x, model), _to(y, model)
        opt = torch.optim.Adam(model.parameters(), lr=float(lr))
        loss_fn = torch.nn.functional.cross_entropy
        taken = 0
        for taken in range(1, int(steps) + 1):
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(self._forward(model, x), y)
            loss.backward()
            opt.step()
            if taken % 10 == 0 or taken == steps:
                model.eval()
                with torch.no_grad():
                    if float(loss_fn(self._forward(model, x), y)) < max_loss:
                        break
        model.eval()
        with torch.no_grad():
            real = float(loss_fn(self._forward(model, x), y))
            zeroed = float(loss_fn(self._forward(model, _zeros_like(x)), y))
        n = len(y)
        if not real < max_loss:
            raise CheckFailed(f"loss on a batch of {n} is {real:.3f} after {taken} Adam steps (lr {lr:g}); "
                              f"needs < {max_loss:g}")
        if not zeroed > max(2 * real, real + 0.1):
            raise CheckFailed(f"loss on zeroed inputs {zeroed:.3f} vs {real:.3f} on the real ones: the model "
                              "ignores its input; needs clearly worse on zeroed inputs")
        return f"loss {real:.4f} on {n} samples after {taken} steps; zeroed inputs {zeroed:.3f}"

    def check_logged_metric_names(self) -> str:
        subject = self.subject
        if not subject.monitors:
            raise CheckSkipped(f"needs {self.label}.monitors: the metric names your checkpointing and early "
                               "stopping watch")
        if subject.evaluate is None:
            raise CheckSkipped(f"needs {self.label}.evaluate: fn(model) -> the dict one real validation pass logs")
        try:
            logged = subject.evaluate(self.new_model())
        except CheckFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - user code
            raise CheckFailed(f"{self.label}.evaluate(model): {_gist(exc)}") from None
        if not isinstance(logged, Mapping):
            raise CheckFailed(f"{self.label}.evaluate(model): returned a {type(logged).__name__}; needs a dict "
                              "of the metrics you log")
        keys = [str(k) for k in logged]
        unknown = [f"monitor '{m}' is not a key evaluate returns{_closest(m, keys)}"
                   for m in subject.monitors if m not in keys]
        if unknown:
            shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
            raise CheckFailed(f"{'; '.join(unknown)} (one validation pass returns {shown})")
        return f"{', '.join(subject.monitors)}: keys one validation pass returns"

    def check_grad_accumulation(self, rtol: float = 1e-3) -> str:
        """Drive the subject's ``train_epoch`` over ``2 x accumulate`` micro-batches with an
        optimizer that only records: it must step once per ``accumulate`` batches, with the
        gradient of the mean loss over those batches (the effective batch)."""
        import copy

        import torch

        subject = self.subject
        accumulate = int(subject.accumulate)
        if subject.train_epoch is None:
            raise CheckSkipped(f"needs {self.label}.train_epoch: fn(model, loader, optimizer, accumulate), "
                               "your own step loop, to check that it steps once per accumulate micro-batches")
        batches = self.first_batches("train")
        size = _batch_len(batches[0][0])
        micro = [b for b in batches if _batch_len(b[0]) == size][: 2 * accumulate]
        if len(micro) < accumulate:
            raise CheckFailed(f"{self.label}.loaders['train'] gave {len(micro)} full batches of {size}; "
                              f"accumulate {accumulate} needs at least {accumulate}")
        micro = micro[: accumulate * (len(micro) // accumulate)]
        model = self.new_model()
        initial = copy.deepcopy(model)
        consumed = [0]

        class CountedBatches:
            def __len__(self) -> int:
                return len(micro)

            def __iter__(self) -> Iterator[tuple[Any, Any]]:
                for item in micro:
                    consumed[0] += 1
                    yield item

        recorded: list[tuple[int, Any]] = []

        class RecordingOptimizer(torch.optim.SGD):
            """lr 0: parameters stay put, so every group's gradient is taken at the same point."""

            def step(self, closure: Any = None) -> Any:
                grads = [p.grad.detach().reshape(-1).clone() for p in model.parameters() if p.grad is not None]
                recorded.append((consumed[0], torch.cat(grads) if grads else torch.zeros(0)))

        optimizer = RecordingOptimizer(model.parameters(), lr=0.0)
        torch.manual_seed(0)
        try:
            subject.train_epoch(model, CountedBatches(), optimizer, accumulate)
        except Exception as exc:  # noqa: BLE001 - user code
            raise CheckFailed(f"{self.label}.train_epoch(model, loader, optimizer, {accumulate}): {_gist(exc)}") from None
        expected_steps = [accumulate * (i + 1) for i in range(len(micro) // accumulate)]
        steps_at = [n for n, _ in recorded]
        if steps_at != expected_steps:
            raise CheckFailed(f"train_epoch stepped the optimizer after micro-batches {steps_at}; accumulate "
                              f"{accumulate} needs a step after {expected_steps}")
        # reference: gradient of the mean loss over the first group, one micro-batch at a time
        reference = initial
        reference.train()
        torch.manual_seed(0)
        for xb, yb in micro[:accumulate]:
            (self.loss(self._forward(reference, _to(xb, reference)), _to(yb, reference)) / accumulate).backward()
        want = torch.cat([p.grad.reshape(-1) for p in reference.parameters() if p.grad is not None])
        got = recorded[0][1]
        diff = float((got - want).norm() / want.norm().clamp_min(1e-12)) if got.shape == want.shape else math.inf
        if diff > rtol:
            raise CheckFailed(f"gradient of one optimizer step over {accumulate} micro-batches of {size} differs "
                              f"from the gradient of their mean loss by {diff:.2g} (relative); needs <= {rtol:g}")
        return (f"batch {size} x accumulate {accumulate} = effective batch {accumulate * size}: "
                f"{len(recorded)} optimizer steps over {len(micro)} micro-batches, gradients agree to {diff:.1g}")

    def check_shortcut_probe(self, max_auc: float = 0.65, radius: float | None = None) -> str:
        import numpy as np

        from pytest_mlgates.probes import DEFAULT_RADIUS, core_mask, core_probe_auc

        train = self._scans.get("train")
        if train is None or not train.images:
            raise CheckSkipped("no central crop to probe: the train inputs are not images (N, C, H, W)")
        images = np.concatenate(train.images)
        labels = np.concatenate(train.image_labels)
        r = float(DEFAULT_RADIUS if radius is None else radius)
        h, w = images.shape[2], images.shape[3]
        covered = float(core_mask(h, w, r).mean())
        if covered > 0.25:
            raise CheckSkipped(f"a core of radius {r:g} covers {covered:.0%} of a {h}x{w} image: "
                               "not a central crop")
        auc = core_probe_auc(images, labels, radius=r, seed=0)
        text = f"central-crop probe AUC = {auc:.3f} (radius {r:g}, {len(labels)} train images)"
        if not auc <= max_auc:
            raise CheckFailed(f"{text}; needs <= {max_auc:g}: the image core alone predicts the class")
        return text

    def check_run_dir_writable(self, min_free_mb: float = 1024) -> str:
        run_dir = self.run_dir or getattr(self.subject, "run_dir", None)
        if run_dir is None:
            raise CheckSkipped(f"no run dir to check: pass --run-dir DIR (or set {self.label}.run_dir)")
        run_dir = Path(run_dir)
        existing = run_dir.absolute()
        while not existing.exists():
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            raise CheckFailed(f"run dir {run_dir}: {existing} exists and is not a directory")
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".mlgates-preflight-"):
                pass
        except OSError as exc:
            raise CheckFailed(f"run dir {run_dir}: cannot write in {existing} ({exc.strerror or exc})") from None
        free_mb = shutil.disk_usage(existing).free / 2**20
        params = _parameter_count(self.new_model())
        # weights + two Adam moments + EMA, a handful of checkpoint files, room to spare
        needed_mb = max(float(min_free_mb), 4 * params * 4 * 6 * 10 / 2**20)
        if free_mb < needed_mb:
            raise CheckFailed(f"run dir {run_dir}: {free_mb:.0f} MiB free on its disk; needs >= {needed_mb:.0f} MiB")
        where = "exists" if existing == run_dir.absolute() else f"will be created under {existing}"
        return f"run dir {run_dir} {where}; writable, {free_mb / 1024:.1f} GiB free"


# ---------------------------------------------------------------------- helpers


def _pair(batch: Any, where: str, index: int) -> tuple[Any, Any]:
    """A batch as (x, y); one line naming what it is otherwise."""
    if isinstance(batch, Mapping):
        keys = ", ".join(map(str, list(batch)[:6]))
        raise CheckFailed(f"{where} batch {index}: a dict with keys [{keys}]; needs (x, y) pairs "
                          "(wrap the loader to yield (inputs, labels))")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {len(batch)}-tuple" if isinstance(batch, (tuple, list)) else f"a {type(batch).__name__}"
        raise CheckFailed(f"{where} batch {index}: {got}; needs (x, y) pairs")
    return batch[0], batch[1]


def _as_numpy(value: Any) -> Any:
    import numpy as np

    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - not array-like
        return None


def _arrays(x: Any) -> dict[str, Any]:
    """The inputs of a batch as numpy arrays: ``{"x": array}`` or one per key of a dict."""
    if isinstance(x, Mapping):
        out = {str(k): _as_numpy(v) for k, v in x.items()}
        return {k: v for k, v in out.items() if v is not None and v.ndim >= 1}
    array = _as_numpy(x)
    if array is None or array.ndim < 1:
        raise CheckFailed(f"inputs of type {type(x).__name__} are not an array or tensor")
    return {"x": array}


def _batch_len(x: Any) -> int:
    if isinstance(x, Mapping):
        return len(next(iter(x.values())))
    return len(x)


def _to(value: Any, model: Any) -> Any:
    from pytest_mlgates.models import to_device_of

    return to_device_of(value, model)


def _zeros_like(x: Any) -> Any:
    import torch

    if isinstance(x, Mapping):
        return {k: torch.zeros_like(v) for k, v in x.items()}
    return torch.zeros_like(x)


def _take(batches: list[tuple[Any, Any]], n: int) -> tuple[Any, Any]:
    """The first ``n`` samples of the first batches, as one batch."""
    import torch

    xs, ys, have = [], [], 0
    for x, y in batches:
        xs.append(x)
        ys.append(y)
        have += _batch_len(x)
        if have >= n:
            break
    if isinstance(xs[0], Mapping):
        x_all: Any = {k: torch.cat([torch.as_tensor(x[k]) for x in xs])[:n] for k in xs[0]}
    else:
        x_all = torch.cat([torch.as_tensor(x) for x in xs])[:n]
    return x_all, torch.cat([torch.as_tensor(y) for y in ys])[:n]


def _parameter_count(model: Any) -> int:
    """Parameters of `model`, leaving out lazy ones not yet shaped by a forward pass."""
    import torch

    lazy = torch.nn.parameter.UninitializedParameter
    return sum(p.numel() for p in model.parameters() if not isinstance(p, lazy))


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


_DONE = object()


def _batches_within(loader: Any, timeout: float, where: str) -> Iterator[Any]:
    """The loader's batches, each within ``timeout`` s, or a :class:`CheckFailed` naming the
    batch that did not come (a hung DataLoader is a failed check, not a frozen terminal).

    The loader runs in a daemon thread that hands batches over one at a time; a loader that
    hangs is left behind in that thread.
    """
    handover: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in loader:
                while not stop.is_set():
                    try:
                        handover.put(("batch", batch), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handover.put(("done", _DONE))
        except BaseException as exc:  # noqa: BLE001 - reported in the consumer's thread
            handover.put(("error", exc))

    thread = threading.Thread(target=produce, name="mlgates-preflight-loader", daemon=True)
    thread.start()
    index = 0
    try:
        while True:
            try:
                kind, item = handover.get(timeout=timeout)
            except queue.Empty:
                raise CheckFailed(f"{where}: batch {index} did not arrive within {timeout:g} s") from None
            if kind == "done":
                return
            if kind == "error":
                raise CheckFailed(f"{where} batch {index}: {_gist(item)}")
            yield item
            index += 1
    finally:
        stop.set()

