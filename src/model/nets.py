"""The two models the engine trains: ``mlp`` (any input) and ``cnn`` (images).

Both are small on purpose — a digits CNN epoch takes a fraction of a second on a CPU —
because the point of this engine is the run it leaves behind, not the model. A model is
a pure function of ``(model config, input shape, number of classes)``, which is what lets
:func:`model_from_checkpoint` rebuild it from the checkpoint alone::

    >>> ckpt = torch.load("runs/x/checkpoints/final.pt", weights_only=True)
    >>> model = model_from_checkpoint(ckpt)   # eval mode, weights loaded
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from model.config import ConfigError, ModelConfig


def _as_model_config(model_cfg: Any) -> ModelConfig:
    if isinstance(model_cfg, ModelConfig):
        return model_cfg
    if isinstance(model_cfg, Mapping):
        try:
            return ModelConfig.model_validate(dict(model_cfg))
        except ValidationError as err:  # one line naming the key, as config.py does
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"model.{key}: {first['msg']}") from None
    raise ConfigError(f"model: expected a model config, got {type(model_cfg).__name__}")


class MLP(nn.Module):
    """flatten -> width -> width -> classes, ReLU, optional dropout."""

    def __init__(self, in_features: int, width: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class AvgMaxPool(nn.Module):
    """Global average and global max pooling, concatenated: (N, C, H, W) -> (N, 2C).

    The max half lets a small feature anywhere in the image (a faint arc) decide the class
    instead of being averaged away over 64x64 pixels; it makes stamps learnable in a few
    epochs where average pooling alone needs many more.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class CNN(nn.Module):
    """Conv-BN-ReLU blocks, max-pooled down to about 8x8, global avg+max pool, linear head.

    Large stamps (64x64) start with a stride-2 convolution so that a CPU epoch stays
    short; 8x8 digits keep full resolution throughout.
    """

    def __init__(self, in_channels: int, height: int, width_px: int, width: int, num_classes: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        side = min(height, width_px)
        stride = 2 if side >= 32 else 1
        layers: list[nn.Module] = _conv_block(in_channels, width, stride)
        side = (side + stride - 1) // stride
        layers += _conv_block(width, width)
        while side > 8:
            layers += [nn.MaxPool2d(2), *_conv_block(width, width)]
            side //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(AvgMaxPool(), nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(model_cfg: Any, input_shape: tuple[int, ...] | list[int], num_classes: int) -> nn.Module:
    """A fresh model for one sample of `input_shape` (no batch dim) and `num_classes`.

    `model_cfg` is the config's ``model`` section (pydantic object or plain dict).
    Raises ConfigError (one line naming ``model.name``) when the model does not fit the data.
    """
    cfg = _as_model_config(model_cfg)
    shape = tuple(int(d) for d in input_shape)
    if num_classes < 2:
        raise ConfigError(f"model: needs at least 2 classes, got {num_classes}")
    if cfg.name == "mlp":
        in_features = 1
        for d in shape:
            in_features *= d
        return MLP(in_features, cfg.width, num_classes, cfg.dropout)
    if cfg.name == "cnn":
        if len(shape) != 3:
            raise ConfigError(
                f"model.name: cnn needs image inputs (channels, height, width), got one sample of shape "
                f"{list(shape)}; use mlp for tabular data"
            )
        return CNN(shape[0], shape[1], shape[2], cfg.width, num_classes, cfg.dropout)
    raise ConfigError(f"model.name: unknown model {cfg.name!r} (valid: cnn, mlp)")


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint was saved from, load its weights, return it in eval mode.

    Uses only the checkpoint's own ``config`` (dict), ``input_shape`` and ``class_names``,
    so the code that trained it is not needed.  When the run kept an EMA of the weights
    (``train.ema_decay > 0``), the EMA weights are loaded: they are what was evaluated.
    """
    for key in ("config", "input_shape", "class_names", "model"):
        if key not in ckpt:
            raise ConfigError(f"checkpoint: missing key '{key}' (not a model-checkpoint file?)")
    config = ckpt["config"]
    model_section = config.get("model", {}) if isinstance(config, Mapping) else {}
    model = build_model(model_section, tuple(ckpt["input_shape"]), len(ckpt["class_names"]))
    # With EMA on, the engine evaluates (and logs, and picks best checkpoints by) the EMA
    # weights, so those are the weights a checkpoint's metrics belong to.
    weights: Mapping[str, Any] = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(weights)
    model.eval()
    return model


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * weights; buffers (BatchNorm stats) are copied."""
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.lerp_(p.detach(), 1.0 - decay)
    for ema_b, b in zip(ema_model.buffers(), model.buffers()):
        ema_b.copy_(b)
