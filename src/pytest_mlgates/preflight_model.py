"""The preflight checks of the model: the user's factory, loss and step loop on real batches.

Each check builds a fresh, seeded model (``Suite.new_model``) and feeds it the first batches
the loader scan kept (``preflight_data.py``): ``forward_softmax`` (one valid softmax row per
sample), ``loss_at_init`` (near ln(C)), ``backward_finite`` (finite, non-zero gradients),
``overfit_small_batch`` (a small batch can be learnt, and zeroed inputs then do worse),
``logged_metric_names`` (every monitor is a key one validation pass returns),
``grad_accumulation`` (the user's ``train_epoch`` steps once per ``accumulate``
micro-batches), and ``run_dir_writable`` (room on the run dir's disk for this model's
checkpoints).  They are functions of a :class:`~pytest_mlgates.preflight_contract.Suite`.

torch is imported inside the checks only.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pytest_mlgates.preflight_contract import CheckFailed, CheckSkipped, Suite, closest, gist

__all__ = ["backward_finite", "forward_softmax", "grad_accumulation", "logged_metric_names", "loss_at_init",
           "overfit_small_batch", "run_dir_writable"]


def forward_softmax(suite: Suite) -> str:
    import torch

    x, _ = suite.first_batch("train")
    model = suite.new_model()
    model.eval()
    with torch.no_grad():
        out = suite.forward(model, _to(x, model))
    n, k = _batch_len(x), suite.subject.num_classes
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


def loss_at_init(suite: Suite, tolerance: float | None = None) -> str:
    import torch

    x, y = suite.first_batch("train")
    k = suite.subject.num_classes
    model = suite.new_model()
    model.train()
    with torch.no_grad():
        loss = float(suite.loss(suite.forward(model, _to(x, model)), _to(y, model)))
    expected = math.log(k)
    # wide on purpose: BatchNorm and max-pooled heads move a healthy init by a few tenths;
    # a broken one (logits x100, a wrong target encoding) is off by several ln(C)
    tol = max(0.75, 0.5 * expected) if tolerance is None else float(tolerance)
    text = f"loss at init {loss:.3f} vs ln({k}) = {expected:.3f}"
    if not math.isfinite(loss) or abs(loss - expected) > tol:
        raise CheckFailed(f"{text}; needs within {tol:.2f} (first train batch)")
    return f"{text} (tolerance {tol:.2f})"


def backward_finite(suite: Suite) -> str:
    import torch

    x, y = suite.first_batch("train")
    model = suite.new_model()
    model.train()
    model.zero_grad(set_to_none=True)
    loss = suite.loss(suite.forward(model, _to(x, model)), _to(y, model))
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


def overfit_small_batch(suite: Suite, samples: int = 16, steps: int = 200, max_loss: float = 0.05,
                              lr: float = 0.01) -> str:
    import torch

    x, y = _take(suite.first_batches("train"), int(samples))
    model = suite.new_model()
    x, y = _to(x, model), _to(y, model)
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    loss_fn = torch.nn.functional.cross_entropy
    taken = 0
    for taken in range(1, int(steps) + 1):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(suite.forward(model, x), y)
        loss.backward()
        opt.step()
        if taken % 10 == 0 or taken == steps:
            model.eval()
            with torch.no_grad():
                if float(loss_fn(suite.forward(model, x), y)) < max_loss:
                    break
    model.eval()
    with torch.no_grad():
        real = float(loss_fn(suite.forward(model, x), y))
        zeroed = float(loss_fn(suite.forward(model, _zeros_like(x)), y))
    n = len(y)
    if not real < max_loss:
        raise CheckFailed(f"loss on a batch of {n} is {real:.3f} after {taken} Adam steps (lr {lr:g}); "
                          f"needs < {max_loss:g}")
    if not zeroed > max(2 * real, real + 0.1):
        raise CheckFailed(f"loss on zeroed inputs {zeroed:.3f} vs {real:.3f} on the real ones: the model "
                          "ignores its input; needs clearly worse on zeroed inputs")
    return f"loss {real:.4f} on {n} samples after {taken} steps; zeroed inputs {zeroed:.3f}"


def logged_metric_names(suite: Suite) -> str:
    subject = suite.subject
    if not subject.monitors:
        raise CheckSkipped(f"needs {suite.label}.monitors: the metric names your checkpointing and early "
                           "stopping watch")
    if subject.evaluate is None:
        raise CheckSkipped(f"needs {suite.label}.evaluate: fn(model) -> the dict one real validation pass logs")
    try:
        logged = subject.evaluate(suite.new_model())
    except CheckFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - user code
        raise CheckFailed(f"{suite.label}.evaluate(model): {gist(exc)}") from None
    if not isinstance(logged, Mapping):
        raise CheckFailed(f"{suite.label}.evaluate(model): returned a {type(logged).__name__}; needs a dict "
                          "of the metrics you log")
    keys = [str(k) for k in logged]
    unknown = [f"monitor '{m}' is not a key evaluate returns{closest(m, keys)}"
               for m in subject.monitors if m not in keys]
    if unknown:
        shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        raise CheckFailed(f"{'; '.join(unknown)} (one validation pass returns {shown})")
    return f"{', '.join(subject.monitors)}: keys one validation pass returns"


def grad_accumulation(suite: Suite, rtol: float = 1e-3) -> str:
    """Drive the subject's ``train_epoch`` over ``2 x accumulate`` micro-batches with an
    optimizer that only records: it must step once per ``accumulate`` batches, with the
    gradient of the mean loss over those batches (the effective batch)."""
    import copy

    import torch

    subject = suite.subject
    accumulate = int(subject.accumulate)
    if subject.train_epoch is None:
        raise CheckSkipped(f"needs {suite.label}.train_epoch: fn(model, loader, optimizer, accumulate), "
                           "your own step loop, to check that it steps once per accumulate micro-batches")
    batches = suite.first_batches("train")
    size = _batch_len(batches[0][0])
    micro = [b for b in batches if _batch_len(b[0]) == size][: 2 * accumulate]
    if len(micro) < accumulate:
        raise CheckFailed(f"{suite.label}.loaders['train'] gave {len(micro)} full batches of {size}; "
                          f"accumulate {accumulate} needs at least {accumulate}")
    micro = micro[: accumulate * (len(micro) // accumulate)]
    model = suite.new_model()
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
        raise CheckFailed(f"{suite.label}.train_epoch(model, loader, optimizer, {accumulate}): {gist(exc)}") from None
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
        (suite.loss(suite.forward(reference, _to(xb, reference)), _to(yb, reference)) / accumulate).backward()
    want = torch.cat([p.grad.reshape(-1) for p in reference.parameters() if p.grad is not None])
    got = recorded[0][1]
    diff = float((got - want).norm() / want.norm().clamp_min(1e-12)) if got.shape == want.shape else math.inf
    if diff > rtol:
        raise CheckFailed(f"gradient of one optimizer step over {accumulate} micro-batches of {size} differs "
                          f"from the gradient of their mean loss by {diff:.2g} (relative); needs <= {rtol:g}")
    return (f"batch {size} x accumulate {accumulate} = effective batch {accumulate * size}: "
            f"{len(recorded)} optimizer steps over {len(micro)} micro-batches, gradients agree to {diff:.1g}")


def run_dir_writable(suite: Suite, min_free_mb: float = 1024) -> str:
    run_dir = suite.run_dir or getattr(suite.subject, "run_dir", None)
    if run_dir is None:
        raise CheckSkipped(f"no run dir to check: pass --run-dir DIR (or set {suite.label}.run_dir)")
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
    params = _parameter_count(suite.new_model())
    # weights + two Adam moments + EMA, a handful of checkpoint files, room to spare
    needed_mb = max(float(min_free_mb), 4 * params * 4 * 6 * 10 / 2**20)
    if free_mb < needed_mb:
        raise CheckFailed(f"run dir {run_dir}: {free_mb:.0f} MiB free on its disk; needs >= {needed_mb:.0f} MiB")
    where = "exists" if existing == run_dir.absolute() else f"will be created under {existing}"
    return f"run dir {run_dir} {where}; writable, {free_mb / 1024:.1f} GiB free"



# ---------------------------------------------------------------------- helpers


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

