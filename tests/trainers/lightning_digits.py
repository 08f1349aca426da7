"""The digits LightningModule and DataModule of the callback and adapter tests.

Importable (with this folder on ``sys.path``) so that a conftest can hand the same module
to ``PreflightSubject.from_lightning`` that ``lightning_gated_run.py`` trains.  The data,
model and metrics are those of every trainer script (``common.py``, ``digits_model.py``).

``collapse_from``: from that epoch on (1-based; 0 = never) the logit of class 3 is pushed
down by 1e4 in ``forward``, in training and validation alike, so ``val_recall_3`` is 0 from
that epoch while every loss stays finite -- a minority class that collapses mid-run.
"""

from __future__ import annotations

from typing import Any

import common  # type: ignore[import-not-found]  # this folder is on sys.path
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from digits_model import DigitsMLP  # type: ignore[import-not-found]
from torch.utils.data import DataLoader, TensorDataset

COLLAPSE_OFFSET = 1e4


class DigitsModule(pl.LightningModule):
    """DigitsMLP as ``self.model``; logs train_loss, val_loss, val_acc, val_recall_<c>,
    val_min_recall once per epoch.  Every ``__init__`` argument is a saved hyper-parameter."""

    def __init__(self, lr: float = common.LR, hidden: int = common.HIDDEN, collapse_from: int = 0,
                 manual_steps_every: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = DigitsMLP(hidden=hidden)
        self.collapsed = False
        # manual optimization stepping every N batches (the accumulation a user wires by hand)
        self.automatic_optimization = manual_steps_every == 0

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.model(x)
        if self.collapsed:
            logits = logits - COLLAPSE_OFFSET * F.one_hot(torch.tensor(common.COLLAPSED_CLASS), logits.shape[-1])
        return logits

    def on_train_epoch_start(self) -> None:
        start = self.hparams["collapse_from"]
        self.collapsed = bool(start) and self.current_epoch + 1 >= start

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, batch_size=len(y))
        every = self.hparams["manual_steps_every"]
        if every:
            opt = self.optimizers()
            self.manual_backward(loss / every)
            if (batch_idx + 1) % every == 0:
                opt.step()
                opt.zero_grad()
            return None
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        m = common.metrics(logits, y)
        values = {"val_loss": F.cross_entropy(logits, y), "val_acc": m["acc"],
                  **{f"val_recall_{c}": m[f"recall_{c}"] for c in range(common.CLASSES)},
                  "val_min_recall": m["min_recall"]}
        self.log_dict(values, on_epoch=True, on_step=False, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class DigitsDataModule(pl.LightningDataModule):
    """The digits split of ``common.load_split``: batches of 64, the val split as one batch."""

    num_classes = common.CLASSES

    def __init__(self, batch_size: int = common.BATCH) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        x_tr, y_tr, x_va, y_va = common.load_split()
        self.train_set = TensorDataset(x_tr, y_tr)
        self.val_set = TensorDataset(x_va, y_va)

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(self.val_set, batch_size=len(self.val_set))
