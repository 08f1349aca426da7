"""The built-in preflight checks: what must hold for a config *before* any training.

Each check is a method of :class:`PreflightSuite` that returns a one-line message when it
passes and raises :class:`CheckFailed` (one line: what was measured, where, what was
needed) when it does not. The suite is built once per pytest process and caches the
expensive parts (config, dataset, first batches), so the whole suite takes seconds::

    >>> suite = PreflightSuite(Path("configs/default.yaml"))
    >>> suite.outcome("loss_at_init").message
    'loss at init 2.338 vs ln(10) = 2.303 (tolerance 1.15)'

Checks depend on each other (a forward pass on NaN data says nothing new), so every check
names the checks it needs in :data:`CHECKS`; when one of those did not pass, the dependent
is *skipped* naming the root cause instead of piling up as more RED. Dependencies are
evaluated lazily in the process that needs them, so the order in which pytest (or xdist,
on several workers) runs the items does not matter.

This module imports torch, numpy and the engine only inside the checks: the pytest
plugin imports it lazily, when a preflight item first runs.
"""

from __future__ import annotations

import difflib
import math
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHECKS", "CHECK_ORDER", "CheckFailed", "CheckSkipped", "Outcome", "PreflightSuite"]


class CheckFailed(Exception):
    """A preflight check that did not hold; ``str()`` is the one line a user reads."""


class CheckSkipped(Exception):
    """A check that does not apply to this config (e.g. an image probe on tabular data)."""


@dataclass(frozen=True)
class CheckSpec:
    """One built-in check: the checks it needs, what it verifies, the parameters it takes."""

    depends: tuple[str, ...]
    summary: str
    params: dict[str, Any] = field(default_factory=dict)


#: Every built-in check in the order the suite runs them. Parameters are what a gate
#: file's ``preflight:`` section may set (see docs/preflight.md).
CHECKS: dict[str, CheckSpec] = {
    "config_validates": CheckSpec((), "the config file loads and validates"),
    "loaders_first_batch": CheckSpec(
        ("config_validates",), "every split loads through the real loaders; first batch within the time budget",
        {"timeout": None},
    ),
    "no_nan_or_inf": CheckSpec(("loaders_first_batch",), "no NaN/Inf in any sample"),
    "no_missing_band": CheckSpec(("loaders_first_batch",), "no sample has a band that is constant (missing)"),
    "split_integrity": CheckSpec(("loaders_first_batch",), "no sample index and no group id in two splits"),
    "split_proportions": CheckSpec(
        ("loaders_first_batch",), "split sizes match val_fraction/test_fraction", {"tolerance": 0.05}
    ),
    "classes_in_every_split": CheckSpec(("loaders_first_batch",), "every class has samples in every split"),
    "forward_softmax": CheckSpec(
        ("loaders_first_batch", "no_nan_or_inf"), "model forward gives one valid softmax row per sample"
    ),
    "loss_at_init": CheckSpec(
        ("forward_softmax",), "class-weighted loss of the untrained model is near ln(C)",
        {"tolerance": None},
    ),
    "backward_finite": CheckSpec(
        ("forward_softmax",), "one real batch backward gives finite, non-zero gradients"
    ),
    "overfit_small_batch": CheckSpec(
        ("backward_finite",), "a small batch can be overfit, and zeroed inputs then do worse",
        {"samples": 16, "steps": 200, "max_loss": 0.05, "lr": 0.01},
    ),
    "logged_metric_names": CheckSpec(
        ("forward_softmax",), "monitor and tracked metrics are keys one real validation step logs"
    ),
    "grad_accumulation": CheckSpec(
        ("backward_finite",), "gradient accumulation gives the configured effective batch",
        {"rtol": 1e-3},
    ),
    "tracked_from_config": CheckSpec(("config_validates",), "tracked metrics come from the config, not the defaults"),
    "shortcut_probe": CheckSpec(
        ("loaders_first_batch",), "a logistic regression on the central crop cannot predict the class",
        {"max_auc": 0.65, "radius": None},
    ),
    "run_dir_writable": CheckSpec(
        ("config_validates",), "the run dir is writable with space to spare", {"min_free_mb": 1024}
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


ModelFactory = Callable[[Any, Any], Any]  # (model.config.Config, model.data.Dataset) -> nn.Module


def _first(items: Any, n: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in list(items)[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


def _closest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class PreflightSuite:
    """The preflight checks for one config file, with everything expensive built once.

    ``run_dir`` is where training would write (``None``: the engine's default);
    ``timeout`` the seconds the first batch of a split may take; ``model_factory``
    builds the model under test (default: the engine's ``build_model``).
    """

    def __init__(self, config_path: Path, *, run_dir: Path | None = None, timeout: float = 20.0,
                 model_factory: ModelFactory | None = None) -> None:
        self.config_path = Path(config_path)
        self.run_dir = run_dir
        self.timeout = float(timeout)
        self.model_factory = model_factory
        self._outcomes: dict[str, Outcome] = {}
        self._config: Any = None
        self._dataset: Any = None
        self._first_batches: dict[str, Any] = {}

    # ------------------------------------------------------------------ running checks

    def outcome(self, name: str, params: dict[str, Any] | None = None) -> Outcome:
        """Run check `name` (once per process for default parameters) and say how it went."""
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
                root = dep_outcome.root or dep
                return Outcome("skipped", f"depends on {root}, which failed", root)
        merged = {**CHECKS[name].params, **params}
        try:
            with _one_torch_thread():
                message = getattr(self, f"check_{name}")(**merged)
        except CheckFailed as exc:
            return Outcome("failed", str(exc), name)
        except CheckSkipped as exc:
            return Outcome("skipped", str(exc), None)
        except Exception as exc:  # noqa: BLE001 - a crash inside the engine is a failed check, in one line
            text = str(exc).splitlines()[0] if str(exc) else ""
            return Outcome("failed", f"{type(exc).__name__}: {text}", name)
        return Outcome("passed", message or "ok", None)

    # ------------------------------------------------------------------ shared state

    @property
    def config(self) -> Any:
        if self._config is None:
            from model.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            from model.data import build_dataset

            self._dataset = build_dataset(self.config)
        return self._dataset

    def new_model(self) -> Any:
        """A fresh, seeded model: the same weights every time it is asked for."""
        import torch

        torch.manual_seed(int(self.config.seed))
        if self.model_factory is not None:
            model = self.model_factory(self.config, self.dataset)
            if model is not None:
                return model
        from model.nets import build_model

        return build_model(self.config.model, self.dataset.input_shape, self.dataset.num_classes)

    def first_batch(self, split: str = "train") -> tuple[Any, Any]:
        """The first batch a training run would see (loaded by ``loaders_first_batch``)."""
        if split not in self._first_batches:
            self.outcome("loaders_first_batch")
        if split not in self._first_batches:
            raise CheckFailed(f"no first batch of split '{split}' (see loaders_first_batch)")
        return self._first_batches[split]

    def class_weights(self) -> Any:
        """The loss weights the engine uses (its own ``compute_class_weights``), or None."""
        import torch

        from model.train import compute_class_weights

        weights = compute_class_weights(self.config.train.class_weights, self.dataset)
        return None if weights is None else torch.tensor(weights, dtype=torch.float32)

    def criterion(self) -> Any:
        """The engine's loss: cross-entropy weighted by ``train.class_weights``."""
        import torch

        return torch.nn.CrossEntropyLoss(weight=self.class_weights())

    # ------------------------------------------------------------------ the checks

    def check_config_validates(self) -> str:
        from model.config import ConfigError

        try:
            cfg = self.config
        except ConfigError as exc:
            raise CheckFailed(str(exc)) from None
        return f"{self.config_path}: {cfg.data.name} / {cfg.model.name}"

    def check_loaders_first_batch(self, timeout: float | None = None) -> str:
        from model.config import ConfigError

        budget = self.timeout if timeout is None else float(timeout)
        try:
            ds = self.dataset
        except ConfigError as exc:
            raise CheckFailed(str(exc)) from None
        cfg = self.config
        sizes = []
        for split in ("train", "val", "test"):
            n = len(ds.splits[split])
            if n == 0:
                if split == "test" and cfg.data.test_fraction == 0:
                    continue
                raise CheckFailed(f"split '{split}' is empty (data.{split}_fraction)")
            loader = ds.loader(
                split, cfg.train.batch_size, shuffle=(split == "train"), seed=int(cfg.seed), epoch=1,
                core_dropout=cfg.train.core_dropout if split == "train" else None,
                num_workers=cfg.data.num_workers,
            )
            batch = _first_batch_within(loader, budget)
            if batch is None:
                raise CheckFailed(f"first batch of split '{split}' did not arrive within {budget:g} s")
            if isinstance(batch, BaseException):
                raise CheckFailed(f"loading split '{split}': {type(batch).__name__}: {batch}")
            x, y = batch
            if x.shape[0] != y.shape[0] or x.shape[1:] != tuple(ds.input_shape):
                raise CheckFailed(
                    f"first batch of split '{split}' has inputs {tuple(x.shape)} and labels {tuple(y.shape)}; "
                    f"expected (batch, {', '.join(map(str, ds.input_shape))}) and (batch,)"
                )
            self._first_batches[split] = (x, y)
            sizes.append(f"{split} {n}")
        return "first batches arrived: " + ", ".join(sizes)

    def check_no_nan_or_inf(self) -> str:
        import numpy as np

        ds = self.dataset
        flat = ds.x.reshape(len(ds.x), -1)
        bad = ~np.isfinite(flat).all(axis=1)
        return self._per_split_report(bad, "with NaN/Inf") or f"all {len(ds.x)} samples finite"

    def check_no_missing_band(self) -> str:
        import numpy as np

        ds = self.dataset
        x = ds.x
        if ds.is_image:
            with np.errstate(invalid="ignore"):
                bands = x.reshape(x.shape[0], x.shape[1], -1)
                lo, hi = np.nanmin(bands, axis=2), np.nanmax(bands, axis=2)
            dead = ~(hi > lo)  # constant or all-NaN band
            bad = dead.any(axis=1)
            report = self._per_split_report(bad, "with a constant (missing) band")
            return report or f"every band of all {len(x)} samples varies"
        # tabular: a feature that is constant over the training split carries nothing
        train = x[ds.splits["train"]]
        with np.errstate(invalid="ignore"):
            dead_cols = np.flatnonzero(~(np.nanmax(train, axis=0) > np.nanmin(train, axis=0)))
        if len(dead_cols):
            raise CheckFailed(f"{len(dead_cols)} features constant over the train split: columns {_first(dead_cols)}")
        return f"all {x.shape[1]} features vary over the train split"

    def _per_split_report(self, bad: Any, what: str) -> str | None:
        """None when no sample is bad; else raise one line: how many, where, first indices."""
        import numpy as np

        ds = self.dataset
        total = int(bad.sum())
        if total == 0:
            return None
        parts = []
        for split in ("train", "val", "test"):
            idx = ds.splits[split]
            hit = idx[bad[idx]]
            if len(hit):
                parts.append(f"{split}: {len(hit)}, first indices {_first(np.sort(hit))}")
        raise CheckFailed(f"{total} of {len(bad)} samples {what} ({'; '.join(parts)})")

    def check_split_integrity(self) -> str:
        import numpy as np

        ds = self.dataset
        names = [s for s in ("train", "val", "test") if len(ds.splits[s])]
        problems = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = np.intersect1d(ds.splits[a], ds.splits[b])
                if len(shared):
                    problems.append(f"{len(shared)} sample indices in {a} and {b} {_first(shared)}")
                if ds.groups is not None:
                    shared_g = np.intersect1d(ds.groups[ds.splits[a]], ds.groups[ds.splits[b]])
                    if len(shared_g):
                        problems.append(f"{len(shared_g)} group ids in {a} and {b} {_first(shared_g)}")
        if problems:
            raise CheckFailed("; ".join(problems))
        groups = "" if ds.groups is None else f" and {len(np.unique(ds.groups))} groups"
        return f"{len(ds.x)} samples{groups}, each in one split"

    def check_split_proportions(self, tolerance: float = 0.05) -> str:
        import numpy as np

        ds, data = self.dataset, self.config.data
        keep = np.ones(len(ds.y), dtype=bool)
        note = ""
        if data.imbalance is not None:  # the thinned class is meant to be off: compare the others
            from model.data import _class_index

            keep = ds.y != _class_index(data.imbalance.class_, ds.class_names)
            note = f" (class '{data.imbalance.class_}' thinned by data.imbalance left out)"
        counts = {s: int(keep[ds.splits[s]].sum()) for s in ("train", "val", "test")}
        total = sum(counts.values())
        wanted = {"val": data.val_fraction, "test": data.test_fraction}
        wanted["train"] = 1.0 - wanted["val"] - wanted["test"]
        got = {s: counts[s] / total if total else 0.0 for s in counts}
        off = [f"{s} {got[s]:.3f} (configured {wanted[s]:.3f})" for s in ("train", "val", "test")
               if abs(got[s] - wanted[s]) > tolerance]
        if off:
            raise CheckFailed(f"split fractions off by more than {tolerance:g}: {', '.join(off)}{note}")
        return ", ".join(f"{s} {got[s]:.3f}" for s in ("train", "val", "test")) + note

    def check_classes_in_every_split(self) -> str:
        import numpy as np

        ds = self.dataset
        missing = []
        for split in ("train", "val", "test"):
            idx = ds.splits[split]
            if len(idx) == 0:
                continue
            present = set(np.unique(ds.y[idx]).tolist())
            absent = [ds.class_names[c] for c in range(ds.num_classes) if c not in present]
            if absent:
                missing.append(f"{split} lacks class {', '.join(repr(a) for a in absent)}")
        if missing:
            raise CheckFailed("; ".join(missing))
        return f"all {ds.num_classes} classes in every split"

    def check_forward_softmax(self) -> str:
        import torch

        x, _ = self.first_batch("train")
        model = self.new_model()
        model.eval()
        with torch.no_grad():
            out = model(x)
        k = self.dataset.num_classes
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape != (x.shape[0], k):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CheckFailed(f"model output {shape} for a batch of {x.shape[0]}; needs ({x.shape[0]}, {k}) logits")
        bad_rows = int((~torch.isfinite(out)).any(dim=1).sum())
        if bad_rows:
            raise CheckFailed(f"model gives NaN/Inf logits in {bad_rows} of {out.shape[0]} rows of the first train "
                              "batch; softmax is not a distribution")
        probs = torch.softmax(out.double(), dim=1)
        worst = float((probs.sum(dim=1) - 1.0).abs().max())
        if not bool(torch.isfinite(probs).all()) or worst > 1e-6:
            raise CheckFailed(f"softmax rows sum to 1 ± {worst:.2g}; needs ± 1e-6")
        return f"({x.shape[0]}, {k}) finite logits; softmax rows sum to 1 ± {worst:.1g}"

    def check_loss_at_init(self, tolerance: float | None = None) -> str:
        import torch

        x, y = self.first_batch("train")
        k = self.dataset.num_classes
        model = self.new_model()
        model.train()
        with torch.no_grad():
            loss = float(self.criterion()(model(x), y))
        expected = math.log(k)
        # wide on purpose: BatchNorm and max-pooled heads move a healthy init by a few tenths;
        # a broken one (logits x100, a wrong target encoding) is off by several ln(C)
        tol = max(0.75, 0.5 * expected) if tolerance is None else float(tolerance)
        text = f"loss at init {loss:.3f} vs ln({k}) = {expected:.3f}"
        if not math.isfinite(loss) or abs(loss - expected) > tol:
            raise CheckFailed(f"{text}; needs within {tol:.2f} (class-weighted cross-entropy, first train batch)")
        return f"{text} (tolerance {tol:.2f})"

    def check_backward_finite(self) -> str:
        import torch

        x, y = self.first_batch("train")
        model = self.new_model()
        model.train()
        model.zero_grad(set_to_none=True)
        loss = self.criterion()(model(x), y)
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

        cfg, ds = self.config, self.dataset
        loader = ds.loader("train", int(samples), shuffle=True, seed=int(cfg.seed), epoch=1)
        x, y = next(iter(loader))
        model = self.new_model()
        opt = torch.optim.Adam(model.parameters(), lr=float(lr))
        loss_fn = torch.nn.functional.cross_entropy
        taken = 0
        for taken in range(1, int(steps) + 1):
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if taken % 10 == 0 or taken == steps:
                model.eval()
                with torch.no_grad():
                    if float(loss_fn(model(x), y)) < max_loss:
                        break
        model.eval()
        with torch.no_grad():
            real = float(loss_fn(model(x), y))
            zeroed = float(loss_fn(model(torch.zeros_like(x)), y))
        if not real < max_loss:
            raise CheckFailed(f"loss on a batch of {len(y)} is {real:.3f} after {taken} Adam steps (lr {lr:g}); "
                              f"needs < {max_loss:g}")
        if not zeroed > max(2 * real, real + 0.1):
            raise CheckFailed(f"loss on zeroed inputs {zeroed:.3f} vs {real:.3f} on the real ones: the model "
                              "ignores its input; needs clearly worse on zeroed inputs")
        return f"loss {real:.4f} after {taken} steps; zeroed inputs {zeroed:.3f}"

    def logged_keys(self) -> list[str]:
        """The columns of one log row, found by running one real validation step through
        the engine's own ``evaluate`` (the function that computes the logged ``val_*``)."""
        import contextlib

        import torch

        from model.train import evaluate

        cfg, ds = self.config, self.dataset
        loader = ds.loader("val", cfg.train.batch_size, shuffle=False, seed=int(cfg.seed), epoch=0)
        x, y = next(iter(loader))
        val = evaluate(self.new_model(), [(torch.nan_to_num(x), y)], self.criterion(), list(ds.class_names),
                       "val", torch.device("cpu"), contextlib.nullcontext())
        # the engine's row: {"epoch", "train_loss", "train_accuracy", **val, "lr", "epoch_seconds"}
        return ["epoch", "train_loss", "train_accuracy", *val, "lr", "epoch_seconds"]

    def check_logged_metric_names(self) -> str:
        cfg = self.config
        keys = self.logged_keys()
        wanted = [(f"checkpoint.tracked metric '{t.metric}'", t.metric) for t in cfg.checkpoint.tracked]
        if cfg.train.early_stopping is not None:
            wanted.append((f"train.early_stopping.monitor '{cfg.train.early_stopping.monitor}'",
                           cfg.train.early_stopping.monitor))
        unknown = [f"{label} is not a logged key{_closest(name, keys)}" for label, name in wanted if name not in keys]
        if unknown:
            shown = ", ".join(k for k in keys if k.startswith("val_") and "recall_" not in k)
            raise CheckFailed(f"{'; '.join(unknown)} (one validation step logs {shown}, val_recall_<class>, ...)")
        return f"{', '.join(sorted({n for _, n in wanted}))} are logged keys"

    def check_grad_accumulation(self, rtol: float = 1e-3) -> str:
        """Drive the engine's own ``train_one_epoch`` over ``2 x accumulate`` micro-batches
        with an optimizer that only records: it must step once per ``accumulate`` batches,
        with the gradient of the mean loss over those batches (the effective batch)."""
        import contextlib
        import copy

        import torch

        from model import distributed
        from model.train import TrainState, train_one_epoch

        cfg, ds = self.config, self.dataset
        accumulate, batch = int(cfg.train.accumulate), int(cfg.train.batch_size)
        loader = ds.loader("train", batch, shuffle=True, seed=int(cfg.seed), epoch=1)
        micro: list[tuple[Any, Any]] = []
        for xb, yb in loader:
            if len(micro) == 2 * accumulate:
                break
            if len(yb) == batch:  # full micro-batches only: a partial one is a smaller group
                micro.append((xb, yb))
        if len(micro) < accumulate:
            raise CheckFailed(f"the train split has {len(micro)} full batches of {batch}; "
                              f"train.accumulate {accumulate} needs at least {accumulate}")
        micro = micro[: accumulate * (len(micro) // accumulate)]
        quiet = cfg.model_copy(deep=True)
        quiet.train.grad_clip = 0.0
        quiet.train.progress_bar = False
        model = self.new_model()
        initial = copy.deepcopy(model)
        consumed = [0]

        def counted() -> Any:
            for item in micro:
                consumed[0] += 1
                yield item

        class CountedBatches:
            def __len__(self) -> int:
                return len(micro)

            def __iter__(self) -> Any:
                return counted()

        recorded: list[tuple[int, Any]] = []

        class RecordingOptimizer(torch.optim.SGD):
            """lr 0: parameters stay put, so every group's gradient is taken at the same point."""

            def step(self, closure: Any = None) -> Any:
                grads = [p.grad.detach().reshape(-1).clone() for p in model.parameters() if p.grad is not None]
                recorded.append((consumed[0], torch.cat(grads)))

        optimizer = RecordingOptimizer(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        torch.manual_seed(int(cfg.seed))
        train_one_epoch(model, model, None, CountedBatches(), self.criterion(), optimizer, scheduler, scaler,
                        contextlib.nullcontext(), TrainState.fresh(cfg), quiet, distributed.DistInfo(), 1)
        expected_steps = [accumulate * (i + 1) for i in range(len(micro) // accumulate)]
        steps_at = [n for n, _ in recorded]
        if steps_at != expected_steps:
            raise CheckFailed(f"the engine stepped after micro-batches {steps_at}; train.accumulate {accumulate} "
                              f"needs a step after {expected_steps}")
        # reference: gradient of the mean loss over the first group, one micro-batch at a time
        reference = initial
        reference.train()
        criterion = self.criterion()
        torch.manual_seed(int(cfg.seed))
        for xb, yb in micro[:accumulate]:
            (criterion(reference(xb), yb) / accumulate).backward()
        want = torch.cat([p.grad.reshape(-1) for p in reference.parameters() if p.grad is not None])
        got = recorded[0][1]
        diff = float((got - want).norm() / want.norm().clamp_min(1e-12)) if got.shape == want.shape else math.inf
        if diff > rtol:
            raise CheckFailed(f"gradient of one optimizer step over {accumulate} micro-batches of {batch} differs "
                              f"from the gradient of their mean loss by {diff:.2g} (relative); needs <= {rtol:g}")
        return (f"train.batch_size {batch} x train.accumulate {accumulate} = effective batch {accumulate * batch}: "
                f"{len(recorded)} optimizer steps over {len(micro)} micro-batches, gradients agree to {diff:.1g}")

    def check_tracked_from_config(self) -> str:
        cfg = self.config
        names = [t.metric for t in cfg.checkpoint.tracked]
        if cfg.uses_default_tracking():
            raise CheckFailed(f"checkpoint.tracked is the default [{', '.join(names)}]; name the metrics you need "
                              f"a best checkpoint for in {self.config_path}")
        return f"tracked: {', '.join(names)}"

    def check_shortcut_probe(self, max_auc: float = 0.65, radius: float | None = None) -> str:
        import numpy as np

        from model.data import shortcut_probe_auc

        ds, cfg = self.dataset, self.config
        if not ds.is_image:
            raise CheckSkipped(f"no central crop to probe: dataset '{ds.name}' is tabular")
        r = float(cfg.train.core_dropout.radius if radius is None else radius)
        h, w = ds.x.shape[2], ds.x.shape[3]
        yy, xx = np.mgrid[0:h, 0:w]
        covered = float(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r * r).mean())
        if covered > 0.25:
            raise CheckSkipped(f"a core of radius {r:g} covers {covered:.0%} of a {h}x{w} image: "
                               "not a central crop")
        train = ds.splits["train"]
        auc = shortcut_probe_auc(ds.x[train], ds.y[train], radius=r, seed=int(cfg.seed))
        text = f"central-crop probe AUC = {auc:.3f} (radius {r:g}, raw train split)"
        if not auc <= max_auc:
            raise CheckFailed(f"{text}; needs <= {max_auc:g}: the image core alone predicts the class")
        return text

    def default_run_dir(self) -> Path:
        """Where ``python -m model train --config C`` writes without --run-dir (its cli.py)."""
        return Path("runs") / self.config_path.stem

    def check_run_dir_writable(self, min_free_mb: float = 1024) -> str:
        run_dir = self.run_dir or self.default_run_dir()
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
        # model + EMA + two Adam moments per checkpoint file; best_* + final + last + temp copy
        files = len(self.config.checkpoint.tracked) + 3
        needed_mb = max(float(min_free_mb), 4 * params * 4 * files * 10 / 2**20)
        if free_mb < needed_mb:
            raise CheckFailed(f"run dir {run_dir}: {free_mb:.0f} MiB free on its disk; needs >= {needed_mb:.0f} MiB")
        where = "exists" if existing == run_dir.absolute() else f"will be created under {existing}"
        return f"run dir {run_dir} {where}; writable, {free_mb / 1024:.1f} GiB free"


# ---------------------------------------------------------------------- helpers


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


def _first_batch_within(loader: Any, timeout: float) -> Any:
    """The loader's first batch, None if it did not come within `timeout` s, or the exception.

    Runs in a daemon thread so that a hung DataLoader (a deadlocked worker, a network
    mount) becomes a failed check instead of a frozen terminal.
    """
    box: list[Any] = []

    def fetch() -> None:
        try:
            box.append(next(iter(loader)))
        except BaseException as exc:  # noqa: BLE001 - reported, not raised: we are in another thread
            box.append(exc)

    thread = threading.Thread(target=fetch, name="mlgates-preflight-first-batch", daemon=True)
    thread.start()
    thread.join(timeout)
    return box[0] if box else None
