"""A tiny MLP for the 8x8 digits, shared by every trainer fixture script.

Kept free of everything but torch so that a gate file can name it as
``tests.trainers.digits_model:DigitsMLP`` (or ``digits_model:DigitsMLP`` with this folder on
``sys.path``) and the plugin can rebuild it from a checkpoint's state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DigitsMLP(nn.Module):
    """64 -> hidden -> classes; returns a loss dict when given labels (the HF Trainer needs it)."""

    def __init__(self, in_features: int = 64, hidden: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        logits = self.net(x.flatten(1))  # (batch, 1, 8, 8) images as well as (batch, 64)
        if labels is None:
            return logits
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}
