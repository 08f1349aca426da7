"""The project's model settings and factory, shared by both training scripts.

A top-level module named ``model`` is common in ML projects, and it is exactly the name an
installed package must never take: ``import model`` here has to find *this* file, from the
training scripts, from the project's own tests and while pytest-mlgates runs its gates
(pytest-mlgates installs only ``pytest_mlgates``)::

    >>> from model import ModelConfig, build_model, evaluate
    >>> net = build_model(ModelConfig(hidden=32))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, recall_score

from wine.data import NUM_CLASSES, NUM_FEATURES
from wine.nets import WineNet


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = 32
    dropout: float = 0.1
    lr: float = 1e-2
    batch_size: int = 16
    accumulate: int = 1  # optimizer steps once per this many batches


def build_model(config: ModelConfig = ModelConfig()) -> WineNet:
    return WineNet(NUM_FEATURES, NUM_CLASSES, hidden=config.hidden, dropout=config.dropout)


def evaluate(logits: torch.Tensor, labels: torch.Tensor, prefix: str = "val_") -> dict[str, float]:
    """The numbers both scripts log: loss, accuracy, macro F1 and every class's recall.

    A model whose weights went NaN has NaN logits: every metric is then NaN, not a
    made-up score from ``argmax`` over NaN.
    """
    loss = F.cross_entropy(logits, labels).item()
    if not torch.isfinite(logits).all():
        nan = {"loss": math.nan, "acc": math.nan, "f1": math.nan}
        nan.update({f"recall_{c}": math.nan for c in range(NUM_CLASSES)})
        return {prefix + k: v for k, v in nan.items()}
    y, pred = labels.numpy(), logits.argmax(dim=1).numpy()
    classes = list(range(NUM_CLASSES))
    recalls = recall_score(y, pred, labels=classes, average=None, zero_division=0)
    out = {"loss": loss, "acc": float((pred == y).mean()),
           "f1": float(f1_score(y, pred, labels=classes, average="macro", zero_division=0))}
    out.update({f"recall_{c}": float(r) for c, r in zip(classes, recalls)})
    return {prefix + k: v for k, v in out.items()}
