"""The classifier: a two-layer MLP over the 13 standardized wine features.

The gate files name this class to reload a checkpoint's weights and check that they give a
valid softmax (``model: "wine.nets:WineNet"``), so its defaults are the trained shape.
"""

from __future__ import annotations

import torch
from torch import nn


class WineNet(nn.Module):
    def __init__(self, in_features: int = 13, num_classes: int = 3, hidden: int = 32,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # logits
