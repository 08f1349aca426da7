"""The faults ``data.faults`` injects into a dataset, so that every gate of pytest-mlgates
can be shown RED on real training and GREEN once the fault is fixed: NaN pixels, a dead
band, val leaked from train (``shortcut`` is drawn into the stamps themselves, in
``stamps.py``).  ``data.build_dataset`` calls them in place on the arrays it builds; each
draws from its own random stream, so adding a fault never changes the honest data.
"""

from __future__ import annotations

import numpy as np

from model.config import ConfigError

# Fault rates: small enough that a run still trains, large enough that a check sees them.
NAN_SAMPLE_FRACTION = 0.02
MISSING_BAND_FRACTION = 0.05
# leaked_groups: val is filled with copies of this many train systems per class.
LEAKED_SYSTEMS_PER_CLASS = 2

# Which faults make sense for which data (a dead band needs bands, a leak needs groups).
_FAULTS_APPLY_TO: dict[str, tuple[str, ...]] = {
    "shortcut": ("stamps",),
    "nan_pixels": ("stamps", "digits"),
    "missing_band": ("stamps",),
    "leaked_groups": ("stamps",),
}


# Random streams 11 to 14 (data.py's splits and core dropout use 21 and up, stamps.py 1 and 2).
_STREAM_SHORTCUT, _STREAM_NAN, _STREAM_BAND, _STREAM_LEAK = 11, 12, 13, 14


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(seed)), stream])


def check_faults_apply(name: str, faults: list[str]) -> None:
    """A fault that does not apply to the dataset is a ConfigError naming those it applies to."""
    for fault in faults:
        allowed = _FAULTS_APPLY_TO.get(fault, ())
        if name not in allowed:
            raise ConfigError(
                f"data.faults: '{fault}' does not apply to dataset '{name}' (only to: {', '.join(allowed)})"
            )


def inject_nan_pixels(x: np.ndarray, seed: int) -> None:
    """A few samples get a small patch of NaN in one band (a bad-pixel mask never applied)."""
    rng = _rng(seed, _STREAM_NAN)
    n = len(x)
    hit = rng.choice(n, size=max(1, round(NAN_SAMPLE_FRACTION * n)), replace=False)
    h, w = x.shape[2], x.shape[3]
    patch = max(1, h // 8)
    for i in hit:
        band = rng.integers(x.shape[1])
        r0, c0 = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
        x[i, band, r0 : r0 + patch, c0 : c0 + patch] = np.nan


def inject_missing_band(x: np.ndarray, seed: int) -> None:
    """A few samples have one band all zeros (a dead detector or a failed coadd)."""
    rng = _rng(seed, _STREAM_BAND)
    n = len(x)
    hit = rng.choice(n, size=max(1, round(MISSING_BAND_FRACTION * n)), replace=False)
    bands = rng.integers(0, x.shape[1], size=len(hit))
    x[hit, bands] = 0.0


def leak_train_into_val(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, splits: dict[str, np.ndarray],
    clarity: np.ndarray | None, seed: int,
) -> None:
    """Overwrite every val sample with an exact copy of a train sample of the same class.

    The bug simulated: val was drawn from a few systems that are also in train (say, a
    cut-out list reused). The copies keep their train group ids, so the leak shows in
    ``splits.json``; they come from the clearest train systems of each class, so even
    a short run scores a perfect val — the "val AUROC of 1.0 that was a leaked split"
    of the spec. The test split stays honest and tells the truth.
    """
    rng = _rng(seed, _STREAM_LEAK)
    train, val = splits["train"], splits["val"]
    score = clarity if clarity is not None else np.zeros(len(x))
    for cls in np.unique(y[val]):
        targets = val[y[val] == cls]
        pool = train[y[train] == cls]
        if len(pool) == 0:
            continue
        # rank train groups of this class by their clearest observation, keep the top few
        pool_groups = np.unique(groups[pool])
        best = np.array([score[pool[groups[pool] == gid]].max() for gid in pool_groups])
        order = np.lexsort((rng.random(len(pool_groups)), -best))
        chosen = pool_groups[order[:LEAKED_SYSTEMS_PER_CLASS]]
        sources = pool[np.isin(groups[pool], chosen)]
        sources = np.resize(rng.permutation(sources), len(targets))
        x[targets] = x[sources]
        groups[targets] = groups[sources]
