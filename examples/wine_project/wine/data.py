"""The wine data (scikit-learn's bundled copy: 178 samples, 13 features, 3 cultivars).

One stratified split, fixed by a seed, so that both training scripts see the same samples
and ``splits.json`` can prove it::

    >>> data = load_data(seed=0)
    >>> data.x["train"].shape, sorted(data.indices)
    (torch.Size([106, 13]), ['test', 'train', 'val'])

``drop_class`` removes one class from the *training* split only (val and test keep it):
the model then never learns that class, which is how a class collapses in real life
(a filter upstream, a mislabelled shard) and what ``class_recall`` is there to catch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

CLASS_NAMES = ("class_0", "class_1", "class_2")
NUM_FEATURES = 13
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "val", "test")


@dataclass
class WineData:
    """Standardized tensors per split, and the row indices into ``load_wine()`` of each."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    indices: dict[str, list[int]]


def split_indices(labels: np.ndarray, seed: int = 0) -> dict[str, list[int]]:
    """60/20/20 train/val/test, stratified by class."""
    everything = np.arange(len(labels))
    train, rest = train_test_split(everything, test_size=0.4, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    return {"train": sorted(train.tolist()), "val": sorted(val.tolist()), "test": sorted(test.tolist())}


def load_data(seed: int = 0, drop_class: int | None = None) -> WineData:
    """The split, standardized with the training split's mean and std."""
    bunch = load_wine()
    features = bunch.data.astype(np.float32)
    labels = bunch.target.astype(np.int64)
    indices = split_indices(labels, seed)
    if drop_class is not None:
        indices["train"] = [i for i in indices["train"] if labels[i] != drop_class]
    mean = features[indices["train"]].mean(axis=0)
    std = features[indices["train"]].std(axis=0) + 1e-6
    x = {name: torch.from_numpy((features[idx] - mean) / std) for name, idx in indices.items()}
    y = {name: torch.from_numpy(labels[idx]) for name, idx in indices.items()}
    return WineData(x=x, y=y, indices=indices)
