"""Bundled datasets, splits and deterministic loaders; the faults they can carry are ``faults.py``.

Nothing is downloaded: ``digits`` and ``breast_cancer`` come with scikit-learn and
``stamps`` is synthesised with numpy from the config's seed (``stamps.py``). The faults
exist so that every gate of pytest-mlgates can be shown RED on real training and then
GREEN once the fault is fixed::

    >>> from model.config import load_config
    >>> ds = build_dataset(load_config(None, ["data.name=stamps", "data.faults=[shortcut]"]))
    >>> ds.x.shape, ds.class_names
    ((1200, 3, 64, 64), ['nonlens', 'lens'])

Everything here is a pure function of the config: the same seed gives the same arrays,
the same splits and, through :meth:`Dataset.loader`, the same batch order for a given
``(seed, epoch, rank)`` — which is what lets a resumed run replay an epoch bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from model.bundled import load_breast_cancer, load_digits
from model.config import Config, ConfigError
from model.faults import (
    check_faults_apply,
    inject_missing_band,
    inject_nan_pixels,
    leak_train_into_val,
)
from model.stamps import SHORTCUT_RADIUS, STAMPS_CLASSES, make_stamps

# The image-core probe belongs to the plugin (its shortcut gate and preflight use it); the
# engine's core_dropout withholds the core exactly the way the gate measures it.
from pytest_mlgates.probes import fill_core_with_median

if TYPE_CHECKING:  # torch is imported where it is used, so `import model.data` stays light
    from torch.utils.data import DataLoader

    from model.distributed import DistInfo

# Separate random streams per purpose, so adding a fault never changes the honest data
# (streams 1 and 2 are the stamps' own, in stamps.py; 11 to 14 the faults', in faults.py).
_STREAM_SPLIT, _STREAM_IMBALANCE, _STREAM_CORE_DROPOUT = 21, 22, 31


def _rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(seed)), stream, *more])


# --------------------------------------------------------------------------- dataset


@dataclass
class Dataset:
    """The full dataset as built (after faults), its splits and train-split statistics.

    ``x`` is raw (not normalized); :meth:`loader` normalizes with ``normalization``.
    ``splits`` holds int64 index arrays into ``x`` for ``train``, ``val`` and ``test``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    class_names: list[str]
    splits: dict[str, np.ndarray]
    normalization: dict[str, list[float]]
    strategy: str = "stratified"
    seed: int = 0
    faults: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, no batch dimension (what :func:`build_model` takes)."""
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    def splits_json(self) -> dict[str, Any]:
        """The content of ``splits.json`` (see docs/internals.md)."""
        out: dict[str, Any] = {"dataset": self.name, "strategy": self.strategy, "seed": self.seed}
        for name in ("train", "val", "test"):
            out[name] = [int(i) for i in self.splits[name]]
        if self.groups is None:
            out["groups"] = None
        else:
            out["groups"] = {n: [int(g) for g in self.groups[self.splits[n]]] for n in ("train", "val", "test")}
        return out

    def normalized(self, split: str) -> np.ndarray:
        """The split's inputs, normalized by the train statistics (NaN stays NaN)."""
        return _normalize(self.x[self.splits[split]], self.normalization, self.is_image)

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int,
        core_dropout: Any = None,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> DataLoader:
        """A DataLoader of ``(x, y)``: normalized float32 inputs and int64 labels.

        The order depends only on ``(seed, epoch, rank, world_size)``: a resumed run
        asking for the same epoch gets the same batches. With ``world_size > 1`` each
        rank gets its own shard, padded to equal length as ``DistributedSampler`` does.
        ``core_dropout`` (``{prob, radius}``, a dict or the config object) fills the
        central disc of a random ``prob`` fraction of images with the median of the rest
        of each band; its randomness is drawn from ``(seed, epoch)`` too. It augments the
        train split only: val and test are always measured on the images as they are.
        """
        import torch

        if split not in self.splits:
            raise ConfigError(f"loader: unknown split {split!r} (valid: train, val, test)")
        if not 0 <= rank < world_size:
            raise ValueError(f"loader: rank {rank} is outside world_size {world_size}")
        x = self.x[self.splits[split]]
        prob, radius = _core_dropout_params(core_dropout)
        if prob > 0.0 and split == "train":
            if not self.is_image:
                raise ConfigError(
                    f"train.core_dropout: needs images, dataset '{self.name}' is tabular (set prob: 0)"
                )
            chosen = _rng(seed, _STREAM_CORE_DROPOUT, epoch).random(len(x)) < prob
            x = x.copy()
            x[chosen] = fill_core_with_median(x[chosen], radius)
        xs = torch.from_numpy(_normalize(x, self.normalization, self.is_image))
        ys = torch.from_numpy(self.y[self.splits[split]].astype(np.int64))
        sampler = _ShardedBatches(len(xs), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                  rank=rank, world_size=world_size)
        return torch.utils.data.DataLoader(
            cast(Any, _ArrayBatches(xs, ys)), sampler=sampler, batch_size=None, num_workers=num_workers
        )


class _ArrayBatches:
    """Map-style dataset whose keys are whole index lists: one slice per batch, no stacking."""

    def __init__(self, x: Any, y: Any) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, indices: list[int]) -> tuple[Any, Any]:
        import torch

        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.y[idx]


class _ShardedBatches:
    """Batches of indices; order a function of (seed, epoch), sharded like DistributedSampler."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                 rank: int, world_size: int) -> None:
        import torch

        if shuffle:
            g = torch.Generator()
            g.manual_seed((abs(int(seed)) * 1_000_003 + int(epoch)) % (2**63))
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if world_size > 1 and n > 0:
            per_rank = math.ceil(n / world_size)
            total = per_rank * world_size
            order = (order * math.ceil(total / n))[:total]  # pad by wrapping, as DistributedSampler
            order = order[rank:total:world_size]
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _core_dropout_params(core_dropout: Any) -> tuple[float, float]:
    if core_dropout is None:
        return 0.0, SHORTCUT_RADIUS
    if isinstance(core_dropout, dict):
        return float(core_dropout.get("prob", 0.0)), float(core_dropout.get("radius", SHORTCUT_RADIUS))
    return float(core_dropout.prob), float(core_dropout.radius)


def _normalize(x: np.ndarray, norm: dict[str, list[float]], is_image: bool) -> np.ndarray:
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    if is_image:
        mean, std = mean[None, :, None, None], std[None, :, None, None]
    return ((x - mean) / std).astype(np.float32, copy=False)


def normalization_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per-channel (images) or per-feature (tabular) mean/std, NaN ignored, std >= 1e-6."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        mean = np.nanmean(x64, axis=axes)
        std = np.nanstd(x64, axis=axes)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std), np.maximum(std, 1e-6), 1.0)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


@contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """numpy warns on an all-NaN slice; the callers handle that case on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# --------------------------------------------------------------------------- building


def build_dataset(config: Config) -> Dataset:
    """The dataset the config names, with its faults, splits and train statistics."""
    data = config.data
    seed = int(config.seed)
    check_faults_apply(data.name, list(data.faults))

    hidden: dict[str, np.ndarray] = {}
    if data.name == "digits":
        x, y, groups, class_names = load_digits()
    elif data.name == "breast_cancer":
        x, y, groups, class_names = load_breast_cancer()
    elif data.name == "stamps":
        x, y, groups, hidden = make_stamps(data.n_samples, seed, shortcut="shortcut" in data.faults)
        class_names = list(STAMPS_CLASSES)
    else:  # the config's Literal already refuses this; kept for callers building configs by hand
        raise ConfigError(f"data.name: unknown dataset {data.name!r} (valid: digits, breast_cancer, stamps)")

    if "nan_pixels" in data.faults:
        inject_nan_pixels(x, seed)
    if "missing_band" in data.faults:
        inject_missing_band(x, seed)

    if data.split == "group_holdout":
        if groups is None:
            raise ConfigError(
                f"data.split: group_holdout needs group ids and dataset '{data.name}' has none (use stratified)"
            )
        splits = _group_holdout_split(y, groups, data.val_fraction, data.test_fraction, seed)
    else:
        splits = _stratified_split(y, data.val_fraction, data.test_fraction, seed)

    if data.imbalance is not None:
        cls = _class_index(data.imbalance.class_, class_names)
        splits["train"] = _thin_class(splits["train"], y, cls, data.imbalance.keep, seed)

    if "leaked_groups" in data.faults:
        assert groups is not None
        leak_train_into_val(x, y, groups, splits, hidden.get("clarity"), seed)

    return Dataset(
        name=data.name,
        x=x,
        y=y,
        groups=groups,
        class_names=class_names,
        splits=splits,
        normalization=normalization_stats(x[splits["train"]]),
        strategy=data.split,
        seed=seed,
        faults=list(data.faults),
    )


def _class_index(cls: int | str, class_names: list[str]) -> int:
    """`imbalance.class` given as an index (3) or a name ('malignant', or '3' for digits)."""
    if isinstance(cls, str) and cls in class_names:
        return class_names.index(cls)
    if isinstance(cls, int) and not isinstance(cls, bool) and 0 <= cls < len(class_names):
        return cls
    raise ConfigError(
        f"data.imbalance.class: {cls!r} is not a class of this dataset "
        f"(names: {', '.join(class_names)}; or an index 0..{len(class_names) - 1})"
    )


# --------------------------------------------------------------------------- splits


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if n_val + n_test >= n > 0:  # keep at least one training item
        n_val = max(0, n - n_test - 1)
    return n_val, n_test


def _stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Per-class shuffled split: every class keeps the configured proportions."""
    rng = _rng(seed, _STREAM_SPLIT)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_val, n_test = _split_counts(len(idx), val_fraction, test_fraction)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


def _group_holdout_split(
    y: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Whole groups go to one split; groups are dealt per majority class to keep balance."""
    rng = _rng(seed, _STREAM_SPLIT, 1)
    uniq = np.unique(groups)
    group_class = np.array([np.bincount(y[groups == g]).argmax() for g in uniq])
    assign: dict[int, str] = {}
    for cls in np.unique(group_class):
        gs = rng.permutation(uniq[group_class == cls])
        n_val, n_test = _split_counts(len(gs), val_fraction, test_fraction)
        for g in gs[:n_test]:
            assign[int(g)] = "test"
        for g in gs[n_test : n_test + n_val]:
            assign[int(g)] = "val"
        for g in gs[n_test + n_val :]:
            assign[int(g)] = "train"
    where = np.array([assign[int(g)] for g in groups])
    return {k: np.flatnonzero(where == k).astype(np.int64) for k in ("train", "val", "test")}


def _thin_class(train: np.ndarray, y: np.ndarray, cls: int, keep: float, seed: int) -> np.ndarray:
    """Keep a `keep` fraction (at least one) of class `cls` in the train split only."""
    members = train[y[train] == cls]
    if len(members) == 0:
        return train
    n_keep = max(1, round(keep * len(members)))
    kept = _rng(seed, _STREAM_IMBALANCE).choice(members, size=n_keep, replace=False)
    return np.sort(np.concatenate([train[y[train] != cls], kept])).astype(np.int64)


def train_loader_for(dataset: Dataset, config: Config, dist: DistInfo,
                     epoch: int) -> Any:
    """This rank's shard of the training split; the order is a function of (seed, epoch)."""
    tc = config.train
    return dataset.loader("train", tc.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                          core_dropout=tc.core_dropout, rank=dist.rank,
                          world_size=dist.world_size, num_workers=config.data.num_workers)
