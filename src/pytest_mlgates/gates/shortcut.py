"""The shortcut gate: can the class be read from the image core, and does the trained
model depend on it?

Two measurements, in order; the first that decides gives the verdict:

1. **Is there a shortcut in the data?** A logistic regression on the central disc of
   ``radius`` pixels (``model.data.shortcut_probe_auc``, cross-validated on ``split``,
   default train) reaches an AUC of at most ``max_auc`` -> GREEN: the core carries no
   class, so no model can have learnt it from there.
2. **Does the model depend on the core?** The checkpoint's val AUROC on the images as
   they are minus its val AUROC on the same images with the core filled by the median of
   the rest of each band (``model.data.fill_core_with_median``, what ``core_dropout`` does
   in training). A drop above ``max_drop`` -> RED: without the core the model loses what
   it claimed to know, so it was reading the class from there. Otherwise GREEN: the data
   has a core shortcut but the model classifies without it.

Nothing is taken on trust from the run's config: a run trained with
``train.core_dropout`` is GREEN only when its model measures GREEN.

Why a fill, and why a swap does not decide: exchanging cores between classes (the
earlier test) also flips a model trained with ``core_dropout``. Such a model never saw a
core, so a bright one is unfamiliar to it and it reacts (on ``stamps`` a bright centre
reads as "lens"); the swap cannot tell "learnt the shortcut" from "was never shown a core".
Filling asks the question that matters -- how good is the model once the core says
nothing -- and separates the two. Measured on ``stamps`` with the ``shortcut`` fault
(1200 samples, CNN width 32, 4 epochs, lr 0.003, ``final.pt``, seeds 0/1/2): without
core dropout the drop is 0.35-0.45; with ``core_dropout.prob`` 1.0 it is -0.11 to 0.04
(prob 0.8: -0.09, 0.04; prob 0.5: 0.02, 0.11). ``max_drop`` defaults to 0.15, between.
The swap is still measured (one forward pass) and shown in the message: a model that
flips with swapped cores will also be fooled by a bright core in new data, which a
reader may want to know.

The model measured is ``final.pt`` unless ``checkpoint:`` names another (see
``_measured_checkpoint`` for why not the best one).
"""

from __future__ import annotations

import math
from typing import Any

from pytest_mlgates.errors import GateFailure
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates._common import fmt, fmt_threshold
from pytest_mlgates.gates.checkpoints import (
    _config_of,
    _default_checkpoint,
    engine_model,
    rebuild_dataset,
)
from pytest_mlgates.rundir import Run

_PROBES: dict[tuple[Any, ...], float] = {}


def _auroc(model: Any, x: Any, y: Any, class_names: list[str]) -> float:
    import torch

    from model.metrics import classification_metrics

    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 256]).float()) for i in range(0, len(x), 256)])
    return float(classification_metrics(logits, torch.from_numpy(y), class_names, "val")["val_auroc"])


def swap_cores(images: Any, labels: Any, radius: float, seed: int = 0) -> Any:
    """Copy of ``images`` (N, C, H, W) where each image's central disc comes from a random
    image of another class (same split). Classes with no other class to draw from keep theirs."""
    import numpy as np

    from model.data import _core_mask

    out = np.array(images, dtype=np.float32, copy=True)
    mask = _core_mask(out.shape[2], out.shape[3], radius)
    rng = np.random.default_rng([abs(int(seed)), 7411])
    labels = np.asarray(labels)
    for cls in np.unique(labels):
        targets = np.flatnonzero(labels == cls)
        donors = np.flatnonzero(labels != cls)
        if len(donors) == 0:
            continue
        chosen = donors[rng.integers(0, len(donors), len(targets))]
        cores = np.asarray(images[chosen], dtype=np.float32)[:, :, mask]  # (n, C, k)
        block = out[targets]
        block[:, :, mask] = cores
        out[targets] = block
    return out


def shortcut(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    from model.data import _core_mask, shortcut_probe_auc

    if params["region"] != "core":
        raise GateFailure(f"gate shortcut: region {params['region']!r} is not supported (supported: core)")
    radius = float(params["radius"])
    max_auc, max_drop = float(params["max_auc"]), float(params["max_drop"])
    name = params.get("checkpoint") or _measured_checkpoint(run)
    shown = run.checkpoint_shown(name)
    ckpt = run.checkpoint(name)
    config = _config_of(run, ckpt, shown)
    dataset = rebuild_dataset(run, config, ckpt)
    if not dataset.is_image:
        raise GateFailure(f"gate shortcut: dataset '{dataset.name}' is not images; the core probe needs (N, C, H, W)")
    covered = float(_core_mask(dataset.x.shape[2], dataset.x.shape[3], radius).mean())
    if covered > 0.5:
        raise GateFailure(
            f"gate shortcut: radius {fmt_threshold(radius)} covers {covered:.0%} of a "
            f"{dataset.x.shape[2]}x{dataset.x.shape[3]} image; the core must be a small part of it (give a smaller radius:)"
        )
    split = params["split"]
    if split not in dataset.splits:
        raise GateFailure(f"gate shortcut: unknown split {split!r} (valid: train, val, test)")

    key = (dataset.name, config.seed, tuple(config.data.faults), config.data.n_samples, split, radius,
           tuple(int(i) for i in dataset.splits[split][:8]), len(dataset.splits[split]))
    probe = _PROBES.get(key)
    if probe is None:
        idx = dataset.splits[split]
        probe = shortcut_probe_auc(dataset.x[idx], dataset.y[idx], radius=radius, seed=int(config.seed))
        _PROBES[key] = probe
    probe_txt = f"core probe AUC = {fmt(probe)} on {split}"
    if math.isnan(probe) or probe <= max_auc:
        return GateResult(True, fmt(probe), f"probe AUC <= {fmt_threshold(max_auc)}",
                          f"{probe_txt}; needs <= {fmt_threshold(max_auc)}: no shortcut in the image core")

    m = core_dependence(dataset, ckpt, shown, radius, int(config.seed))
    threshold = f"AUROC drop <= {fmt_threshold(max_drop)}"
    where = (f"({shown}: val AUROC {fmt(m['intact'])} intact -> {fmt(m['filled'])} with the core filled; "
             f"{probe_txt}; for information {fmt(m['swapped'])} with cores swapped between classes)")
    head = f"val AUROC drop with the core filled = {fmt(m['drop'])} {where}; needs <= {fmt_threshold(max_drop)}"
    if m["drop"] > max_drop:
        return GateResult(False, fmt(m["drop"]), threshold,
                          f"{head}: the model reads the class from the image core")
    return GateResult(True, fmt(m["drop"]), threshold,
                      f"{head}: the data has a core shortcut but the model does not depend on it")


def _measured_checkpoint(run: Run) -> str:
    """``final`` when the run has one, else the usual default (best of the first tracked
    metric, else ``last``).

    Why not the best checkpoint first, as the other checkpoint gates do: a best_* file is
    chosen on val images that carry the shortcut, so the choice itself favours the epoch
    that leans on the core. Measured on ``stamps`` with ``core_dropout.prob: 1.0``: val
    loss on intact images is lowest after epoch 1 in 2 of 3 seeds -- a barely trained model
    whose val AUROC owes up to 0.2 to the core -- while the final weights drop by at most
    0.04. The final weights are what the training taught; name a best checkpoint with
    ``checkpoint:`` to judge the one you ship.
    """
    if (run.path / "checkpoints" / "final.pt").exists():
        return "final"
    return _default_checkpoint(run)


def core_dependence(dataset: Any, ckpt: dict[str, Any], shown: str, radius: float, seed: int) -> dict[str, float]:
    """The checkpoint's val AUROC on intact images (``intact``), with the central disc filled
    by the median of the rest of each band (``filled``) and with cores swapped between
    classes (``swapped``); ``drop = intact - filled`` (``inf`` when not finite, so a model
    that gives NaN never passes)."""
    import numpy as np

    from model.data import _normalize, fill_core_with_median

    model = engine_model(ckpt, shown)
    val = dataset.splits["val"]
    raw = dataset.x[val]
    y = dataset.y[val].astype(np.int64)
    if len(np.unique(y)) < 2:
        raise GateFailure("gate shortcut: the val split has fewer than two classes; cannot measure AUROC")
    names = list(ckpt.get("class_names") or dataset.class_names)

    def auroc(images: Any) -> float:
        return _auroc(model, _normalize(images, dataset.normalization, True).astype(np.float32), y, names)

    intact = auroc(raw)
    filled = auroc(fill_core_with_median(raw, radius))
    swapped = auroc(swap_cores(raw, y, radius, seed=seed))
    drop = intact - filled
    return {"intact": intact, "filled": filled, "swapped": swapped,
            "drop": drop if math.isfinite(drop) else math.inf}
