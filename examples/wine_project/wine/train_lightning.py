"""Train WineNet with PyTorch Lightning: a LightningModule, a LightningDataModule, a
CSVLogger and one ModelCheckpoint per tracked metric.

    python -m wine.train_lightning --out runs/lightning                      # healthy
    python -m wine.train_lightning --out runs/lightning --drop-class 2       # class 2 never learnt
    python -m wine.train_lightning --out runs/lightning --nan-at-epoch 2     # weights NaN from epoch 2

The run dir is the logger's version dir, printed at the end::

    runs/lightning/lightning_logs/version_0/
      metrics.csv                              CSVLogger; Lightning counts epochs from 0
      hparams.yaml
      checkpoints/best-val_loss-epoch=E.ckpt   ModelCheckpoint(monitor="val_loss")
      checkpoints/best-val_f1-epoch=E.ckpt     ModelCheckpoint(monitor="val_f1")
      checkpoints/last.ckpt
      splits.json                              the train/val/test indices into load_wine()

``acceptance/lightning.gates.yaml`` reads all of it as Lightning wrote it: the tracked
metrics are the ModelCheckpoint monitors, the epochs are Lightning's own.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from pytest_mlgates.lightning import GatesCallback
from torch.utils.data import DataLoader, TensorDataset

from model import ModelConfig, build_model, evaluate
from wine.data import NUM_CLASSES, load_data


class WineDataModule(L.LightningDataModule):
    def __init__(self, seed: int = 0, drop_class: int | None = None, batch_size: int = 16) -> None:
        super().__init__()
        self.seed, self.drop_class, self.batch_size = seed, drop_class, batch_size

    def setup(self, stage: str | None = None) -> None:
        self.data = load_data(seed=self.seed, drop_class=self.drop_class)

    def _dataset(self, split: str) -> TensorDataset:
        return TensorDataset(self.data.x[split], self.data.y[split])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("train"), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("val"), batch_size=64)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("test"), batch_size=64)


class WineClassifier(L.LightningModule):
    """WineNet as ``self.model``: its state_dict keys carry Lightning's ``model.`` prefix."""

    def __init__(self, hidden: int = 32, dropout: float = 0.1, lr: float = 1e-2,
                 nan_at_epoch: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(ModelConfig(hidden=hidden, dropout=dropout, lr=lr))
        self._val_batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self._val_batches.append((self.model(x), y))

    def on_validation_epoch_end(self) -> None:
        # recall and F1 over the whole split, not a mean of per-batch values
        logits = torch.cat([b[0] for b in self._val_batches])
        labels = torch.cat([b[1] for b in self._val_batches])
        self._val_batches.clear()
        self.log_dict(evaluate(logits, labels, prefix="val_"))

    def on_train_epoch_start(self) -> None:
        # the fault: a divergence, the weights NaN from this epoch on (Lightning's numbering)
        if self.current_epoch == self.hparams["nan_at_epoch"]:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(math.nan)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train WineNet with PyTorch Lightning.")
    parser.add_argument("--out", type=Path, required=True, help="the logger's save_dir")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop-class", type=int, choices=range(NUM_CLASSES), default=None,
                        help="fault: remove this class from the training split")
    parser.add_argument("--nan-at-epoch", type=int, default=None,
                        help="fault: the weights turn NaN at the start of this epoch (0-based, "
                             "as Lightning and its metrics.csv number it)")
    parser.add_argument("--gates", type=Path, default=None,
                        help="in-flight gate file judged after every epoch (its stage: inflight criteria)")
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    datamodule = WineDataModule(seed=args.seed, drop_class=args.drop_class)
    module = WineClassifier(nan_at_epoch=args.nan_at_epoch)
    logger = CSVLogger(args.out)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        logger=logger,
        callbacks=[  # one best checkpoint per tracked metric
            ModelCheckpoint(monitor="val_loss", mode="min", filename="best-val_loss-{epoch}", save_last=True),
            ModelCheckpoint(monitor="val_f1", mode="max", filename="best-val_f1-{epoch}"),
            # a doomed run stops after its first epochs (after_epoch counts completed epochs from 1)
            *([GatesCallback(args.gates, after_epoch=2)] if args.gates else []),
        ],
        deterministic=True,
        log_every_n_steps=1,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=datamodule)

    run_dir = Path(logger.log_dir)
    (run_dir / "splits.json").write_text(json.dumps(datamodule.data.indices))
    print(run_dir)


if __name__ == "__main__":
    main()
