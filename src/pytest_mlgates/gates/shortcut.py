"""The shortcut gate: can the class be read from the image core, and did training let the
model learn it?

Three steps, in order; the first that decides gives the verdict:

1. **Is there a shortcut in the data?** A logistic regression on the central disc of
   ``radius`` pixels (``model.data.shortcut_probe_auc``, cross-validated on ``split``,
   default train) reaches an AUC of at most ``max_auc`` -> GREEN: the core carries no class.
2. **Did the training hide the core?** The run's ``train.core_dropout`` has
   ``prob >= min_dropout`` (default 0.5) and ``radius >=`` the gate's ``radius`` -> GREEN:
   the model was trained to classify without the core on at least half the images, the
   engine's documented mitigation. ``trust_core_dropout: false`` skips this step.
3. **Does the model follow the core?** The trained model's val AUROC on intact images
   minus its val AUROC on the same images with their cores *swapped between classes*
   (each val image gets the central disc of a val image of another class, fixed seed).
   A drop above ``max_drop`` -> RED: the model reads the class from the core. Otherwise
   GREEN: the data has a shortcut but the model does not rely on it.

Why a swap and not a median fill: filling the core also removes the central galaxy, which
costs an honest model AUROC too; exchanging cores between classes changes only what the
shortcut is about. Why step 2 trusts the recipe instead of measuring: on the bundled
``stamps`` data a CNN trained with core dropout still *responds* to a bright core on
intact images (its convolutions detect brightness anywhere), so the swap test cannot
tell "learnt the shortcut" from "was never taught to ignore the core". The measured drop
is still shown in the message in that case, for the reader to judge.
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
    from model.data import shortcut_probe_auc

    if params["region"] != "core":
        raise GateFailure(f"gate shortcut: region {params['region']!r} is not supported (supported: core)")
    radius = float(params["radius"])
    max_auc, max_drop = float(params["max_auc"]), float(params["max_drop"])
    name = params.get("checkpoint") or _default_checkpoint(run)
    path = run.checkpoint_path(name)
    shown = run.shown(run.path / path.relative_to(run.path.resolve()))
    ckpt = run.checkpoint(name)
    config = _config_of(run, ckpt, shown)
    dataset = rebuild_dataset(run, config, ckpt)
    if not dataset.is_image:
        raise GateFailure(f"gate shortcut: dataset '{dataset.name}' is not images; the core probe needs (N, C, H, W)")
    from model.data import _core_mask

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

    drop, auc_intact, auc_swapped = _swap_drop(dataset, ckpt, shown, radius, int(config.seed))
    measured = (f"val AUROC {fmt(auc_intact)} intact -> {fmt(auc_swapped)} with cores swapped between "
                f"classes (drop {fmt(drop)})")
    dropout = config.train.core_dropout
    hidden = (params["trust_core_dropout"] and dropout.prob >= float(params["min_dropout"])
              and dropout.radius >= radius)
    if hidden:
        return GateResult(
            True, fmt(probe), f"probe AUC <= {fmt_threshold(max_auc)} or core_dropout prob >= "
            f"{fmt_threshold(params['min_dropout'])}",
            f"{probe_txt}: the data has a core shortcut; training hid the core "
            f"(train.core_dropout prob {fmt_threshold(dropout.prob)} >= {fmt_threshold(params['min_dropout'])}, "
            f"radius {fmt_threshold(dropout.radius)} >= {fmt_threshold(radius)}); for information: {measured}",
        )
    threshold = f"AUROC drop <= {fmt_threshold(max_drop)}"
    where = f"({shown}: {measured}; {probe_txt}; train.core_dropout prob {fmt_threshold(dropout.prob)})"
    if drop > max_drop:
        return GateResult(False, fmt(drop), threshold,
                          f"val AUROC drop with swapped cores = {fmt(drop)} {where}; needs <= "
                          f"{fmt_threshold(max_drop)}: the model reads the class from the image core")
    return GateResult(True, fmt(drop), threshold,
                      f"val AUROC drop with swapped cores = {fmt(drop)} {where}; needs <= "
                      f"{fmt_threshold(max_drop)}: the data has a core shortcut but the model does not follow it")


def _swap_drop(dataset: Any, ckpt: dict[str, Any], shown: str, radius: float, seed: int) -> tuple[float, float, float]:
    """(drop, AUROC intact, AUROC with cores swapped between classes) of the model on val."""
    import numpy as np

    from model.data import _normalize

    model = engine_model(ckpt, shown)
    val = dataset.splits["val"]
    raw = dataset.x[val]
    y = dataset.y[val].astype(np.int64)
    if len(np.unique(y)) < 2:
        raise GateFailure("gate shortcut: the val split has fewer than two classes; cannot measure AUROC")
    names = list(ckpt.get("class_names") or dataset.class_names)
    intact = _normalize(raw, dataset.normalization, True).astype(np.float32)
    swapped = _normalize(swap_cores(raw, y, radius, seed=seed), dataset.normalization, True).astype(np.float32)
    auc_intact = _auroc(model, intact, y, names)
    auc_swapped = _auroc(model, swapped, y, names)
    drop = auc_intact - auc_swapped
    return (drop if not math.isnan(drop) else math.inf), auc_intact, auc_swapped
