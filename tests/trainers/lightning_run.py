"""A PyTorch Lightning run: CSVLogger + ModelCheckpoint, the run dir is OUT/lightning_logs/version_0.

version_0/ holds metrics.csv (train_loss, val_loss, val_acc, val_recall_<c>, val_min_recall,
one value per epoch, epochs counted from 0 as Lightning does), hparams.yaml and
checkpoints/best-epoch=E-val_loss=V.ckpt plus checkpoints/last.ckpt. ``--tb`` adds a
TensorBoardLogger writing its event file into the same version dir. ``--mlflow`` logs with
Lightning's MLFlowLogger instead of the CSVLogger (OUT/mlflow.db, by global step, with the
epoch as a metric, as MLflow users of Lightning have it), checkpoints in OUT/lightning_ckpts/;
the run dir printed is then OUT. ``--track-recall`` adds a second ModelCheckpoint, for
val_min_recall (mode max): two tracked metrics, two best files. ``--save-after-fit`` writes
last.ckpt with ``trainer.save_checkpoint`` once ``fit`` returns, as many users do: its
``epoch`` is then one past the last logged epoch (the loop finished it). ``--worse-last``
raises the learning rate a hundredfold for the last epoch, so val_loss does not improve
there: since Lightning 2.6 ``ModelCheckpoint(save_last=True)`` then leaves last.ckpt at the
epoch before (it rewrites it only when a top-k file is saved). ``--last-every-epoch`` is the
fix: ``save_last`` moves to a ``ModelCheckpoint(monitor=None, save_last=True)`` of its own.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]
import torch
import torch.nn.functional as F
from digits_model import DigitsMLP  # type: ignore[import-not-found]


def add_tb(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tb", action="store_true", help="also log to TensorBoard")
    parser.add_argument("--mlflow", action="store_true", help="log to MLflow (sqlite) instead of CSV")
    parser.add_argument("--track-recall", action="store_true",
                        help="a second ModelCheckpoint, for val_min_recall (max)")
    parser.add_argument("--save-after-fit", action="store_true",
                        help="write last.ckpt with trainer.save_checkpoint after fit")
    parser.add_argument("--worse-last", action="store_true",
                        help="a hundredfold learning rate in the last epoch: val_loss gets worse there")
    parser.add_argument("--last-every-epoch", action="store_true",
                        help="save_last on a ModelCheckpoint(monitor=None) of its own")


def run(args: argparse.Namespace) -> Path:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    # a 64-sample-batch toy run: Lightning's advice on workers and logging cadence is noise
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    class DigitsModule(pl.LightningModule):
        """DigitsMLP as ``self.model``, so state_dict keys carry the ``model.`` prefix."""

        def __init__(self, lr: float, epochs: int, seed: int, hidden: int, fault: str,
                     worse_last: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = DigitsMLP(hidden=hidden)

        def forward(self, x: torch.Tensor) -> Any:
            return self.model(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False, batch_size=len(y))
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch  # the whole val split is one batch: epoch means are exact
            logits = self.model(x)
            m = common.metrics(logits, y)
            values = {"val_loss": F.cross_entropy(logits, y), "val_acc": m["acc"],
                      **{f"val_recall_{c}": m[f"recall_{c}"] for c in range(common.CLASSES)},
                      "val_min_recall": m["min_recall"]}
            self.log_dict(values, on_epoch=True, on_step=False, batch_size=len(y))

        def on_train_epoch_start(self) -> None:
            # At the start of the epoch after NAN_AFTER_EPOCH (current_epoch is 0-based). Not in
            # on_train_epoch_end: ModelCheckpoint saves after the module's epoch-end hook, so
            # the best checkpoint of the last healthy epoch would hold the NaN weights.
            if self.hparams["fault"] == "nan" and self.current_epoch == common.NAN_AFTER_EPOCH:
                common.poison(self.model)
            if self.hparams["worse_last"] and self.current_epoch == self.hparams["epochs"] - 1:
                for group in self.trainer.optimizers[0].param_groups:
                    group["lr"] = self.hparams["lr"] * 100

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])

    pl.seed_everything(args.seed, workers=True, verbose=False)
    x_tr, y_tr, x_va, y_va = common.load_split(args.fault)
    train = DataLoader(TensorDataset(x_tr, y_tr), batch_size=common.BATCH, shuffle=True)
    val = DataLoader(TensorDataset(x_va, y_va), batch_size=len(y_va))
    csv_logger = CSVLogger(save_dir=str(args.out), name="lightning_logs")
    loggers: list[Any] = [csv_logger]
    dirpath = None
    if args.mlflow:
        from lightning.pytorch.loggers import MLFlowLogger

        loggers = [MLFlowLogger(experiment_name="digits", tracking_uri=f"sqlite:///{args.out}/mlflow.db",
                                artifact_location=(args.out / "mlartifacts").as_uri(), log_model=False)]
        dirpath = str(args.out / "lightning_ckpts")
    if args.tb:
        loggers.append(TensorBoardLogger(save_dir=str(args.out), name="lightning_logs",
                                         version=csv_logger.version, default_hp_metric=False))
    checkpoint = ModelCheckpoint(monitor="val_loss", mode="min", save_last=not args.last_every_epoch,
                                 dirpath=dirpath, filename="best-{epoch}-{val_loss:.4f}")
    callbacks: list[Any] = [checkpoint]
    if args.last_every_epoch:
        callbacks.append(ModelCheckpoint(monitor=None, save_last=True, dirpath=dirpath))
    if args.track_recall:  # one best checkpoint per tracked metric, as the engine keeps them
        callbacks.append(ModelCheckpoint(monitor="val_min_recall", mode="max", dirpath=dirpath,
                                         filename="best-recall-{epoch}-{val_min_recall:.4f}"))
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=loggers,
                         callbacks=callbacks, enable_progress_bar=False,
                         enable_model_summary=False, deterministic=True, log_every_n_steps=1,
                         num_sanity_val_steps=0)
    module = DigitsModule(lr=common.LR, epochs=args.epochs, seed=args.seed, hidden=common.HIDDEN,
                          fault=args.fault, worse_last=args.worse_last)
    trainer.fit(module, train, val)
    if args.save_after_fit:
        trainer.save_checkpoint(str(checkpoint.dirpath) + "/last.ckpt")
    if args.fault == "no_best":
        Path(checkpoint.best_model_path).unlink()
    return args.out if args.mlflow else Path(csv_logger.log_dir)


if __name__ == "__main__":
    common.main(run, __doc__ or "", add_tb)
