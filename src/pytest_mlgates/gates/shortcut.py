"""The shortcut gate: can the class be read from the image core, and does the trained
model depend on it?

Two measurements, in order; the first that decides gives the verdict:

1. **Is there a shortcut in the data?** A logistic regression on the central disc of
   ``radius`` pixels (``pytest_mlgates.probes.core_probe_auc``, cross-validated on the
   subject's ``split`` loader, default train) reaches an AUC of at most ``max_auc`` ->
   GREEN: the core carries no class, so no model can have learnt it from there.
2. **Does the model depend on the core?** The checkpoint's val AUROC on the images as
   they are minus its val AUROC on the same images with the core filled by the median of
   the rest of each band (``probes.fill_core_with_median``, what the bundled engine's
   ``core_dropout`` does in training). A drop above ``max_drop`` -> RED: without the core
   the model loses what it claimed to know, so it was reading the class from there.
   Otherwise GREEN: the data has a core shortcut but the model classifies without it.

The images and the model come from the user's ``mlgates_subject`` fixture (its loaders,
and its model given the checkpoint's weights); the images are the loaders' (normalised)
ones, which changes neither measurement (both are invariant to a per-band affine map).
Nothing is taken on trust from the run's config: a run trained with ``core_dropout`` is
GREEN only when its model measures GREEN.

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

from pytest_mlgates.errors import GateFailure, MlgatesError
from pytest_mlgates.formats._mutations import Mutation, Mutations
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import fmt, fmt_threshold
from pytest_mlgates.rundir import Run

#: Images read from a loader for the probe and the dependence measurement.
MAX_IMAGES = 4000

_PROBES: dict[tuple[Any, ...], float] = {}


def _images(subject: Any, split: str) -> tuple[Any, Any]:
    """Up to MAX_IMAGES (N, C, H, W) images and their labels from the subject's loader."""
    import numpy as np

    from pytest_mlgates.models import first_samples

    if split not in subject.loaders:
        raise GateFailure(f"gate shortcut: {subject.name} has no '{split}' loader "
                          f"(loaders: {', '.join(subject.loaders)})")
    x, y, _ = first_samples(subject, split, MAX_IMAGES)
    if isinstance(x, dict) or getattr(x, "ndim", 0) != 4:
        shape = tuple(getattr(x, "shape", ())) if not isinstance(x, dict) else "a dict"
        raise GateFailure(f"gate shortcut: {subject.name}.loaders['{split}'] gives inputs of shape {shape}; "
                          "the core probe needs images (N, C, H, W)")
    return np.asarray(x.detach().cpu().numpy(), dtype=np.float32), np.asarray(y.cpu().numpy()).astype(np.int64)


def _auroc(model: Any, images: Any, labels: Any) -> float:
    """Binary: AUROC of the positive (second) class; more classes: macro one-vs-rest."""
    import numpy as np

    from pytest_mlgates.errors import require_extra
    from pytest_mlgates.models import forward, to_device_of

    torch = require_extra("torch", "gate shortcut")
    require_extra("sklearn", "gate shortcut")
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        logits = torch.cat([forward(model, to_device_of(images[i:i + 256], model)).float().cpu()
                            for i in range(0, len(images), 256)])
    probs = torch.softmax(logits.double(), dim=1).numpy()
    if not np.isfinite(probs).all():
        return math.nan
    classes = np.unique(labels)
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    if len(classes) < probs.shape[1]:  # sklearn needs every class present for multi-class scores
        present = probs[:, classes]
        present = present / present.sum(axis=1, keepdims=True)
        return float(roc_auc_score(labels, present, multi_class="ovr", average="macro", labels=classes))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def swap_cores(images: Any, labels: Any, radius: float, seed: int = 0) -> Any:
    """Copy of ``images`` (N, C, H, W) where each image's central disc comes from a random
    image of another class (same split). Classes with no other class to draw from keep theirs."""
    import numpy as np

    from pytest_mlgates.probes import core_mask

    out = np.array(images, dtype=np.float32, copy=True)
    mask = core_mask(out.shape[2], out.shape[3], radius)
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


def shortcut_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    return [], ("no mutation: a shortcut lives in the trained weights; prove it by "
                "training with data.faults: [shortcut] instead")


@p.gate(doc="the model does not rely on a shortcut in the image core",
        params={"region": p.Param(p.string, "core"), "radius": p.Param(p.number, 5),
                "max_auc": p.Param(p.number, 0.65), "max_drop": p.Param(p.number, 0.15),
                "split": p.Param(p.string, "train"), "checkpoint": p.Param(p.string)},
        mutations=shortcut_mutations)
def shortcut(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    from pytest_mlgates.probes import core_mask, core_probe_auc

    if params["region"] != "core":
        raise GateFailure(f"gate shortcut: region {params['region']!r} is not supported (supported: core)")
    radius = float(params["radius"])
    max_auc, max_drop = float(params["max_auc"]), float(params["max_drop"])
    name = params.get("checkpoint") or _measured_checkpoint(run)
    run.checkpoint_path(name)  # a missing or unsafe checkpoint is named before anything is measured
    subject = ctx.subject()
    if subject is None:
        raise GateFailure(f"{run.shown(run.path)}: gate shortcut needs the images and the model of this run: "
                          "define the mlgates_subject fixture (its loaders and model; docs/preflight.md)")
    split = params["split"]
    images, labels = _images(subject, split)
    covered = float(core_mask(images.shape[2], images.shape[3], radius).mean())
    if covered > 0.5:
        raise GateFailure(
            f"gate shortcut: radius {fmt_threshold(radius)} covers {covered:.0%} of a "
            f"{images.shape[2]}x{images.shape[3]} image; the core must be a small part of it (give a smaller radius:)"
        )
    key = (id(subject), split, radius, len(labels))
    probe = _PROBES.get(key)
    if probe is None:
        probe = core_probe_auc(images, labels, radius=radius, seed=0)
        _PROBES[key] = probe
    probe_txt = f"core probe AUC = {fmt(probe)} on {len(labels)} {split} images"
    if math.isnan(probe) or probe <= max_auc:
        return GateResult(True, fmt(probe), f"probe AUC <= {fmt_threshold(max_auc)}",
                          f"{probe_txt}; needs <= {fmt_threshold(max_auc)}: no shortcut in the image core")

    shown = run.checkpoint_shown(name)
    from pytest_mlgates.gates.rebuild import checkpoint_model

    model, _ = checkpoint_model(run, run.checkpoint(name), {}, ctx, shown)
    val_images, val_labels = images, labels
    if split != "val" and "val" in subject.loaders:
        val_images, val_labels = _images(subject, "val")
    m = core_dependence(model, val_images, val_labels, radius)
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
    try:
        if run.checkpoint_path("final").is_file():
            return "final"
    except MlgatesError:  # a format without a final checkpoint
        pass
    return run.default_checkpoint()


def core_dependence(model: Any, images: Any, labels: Any, radius: float, seed: int = 0) -> dict[str, float]:
    """The model's val AUROC on intact images (``intact``), with the central disc filled by
    the median of the rest of each band (``filled``) and with cores swapped between classes
    (``swapped``); ``drop = intact - filled`` (``inf`` when not finite, so a model that
    gives NaN never passes)."""
    import numpy as np

    from pytest_mlgates.probes import fill_core_with_median

    if len(np.unique(labels)) < 2:
        raise GateFailure("gate shortcut: the val split has fewer than two classes; cannot measure AUROC")
    intact = _auroc(model, images, labels)
    filled = _auroc(model, fill_core_with_median(images, radius), labels)
    swapped = _auroc(model, swap_cores(images, labels, radius, seed=seed), labels)
    drop = intact - filled
    return {"intact": intact, "filled": filled, "swapped": swapped,
            "drop": drop if math.isfinite(drop) else math.inf}
