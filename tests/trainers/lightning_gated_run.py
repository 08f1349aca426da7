"""A Lightning run under in-flight gates: the run dir is OUT/lightning_logs/version_0.

``GatesCallback(GATES, after_epoch=N)`` judges the run as it trains; ``--collapse-from E``
makes the minority class 3 collapse from epoch E on (see ``lightning_digits.py``).
CSVLogger + ``ModelCheckpoint(monitor="val_loss", save_last=True)``, as ``lightning_run.py``.
``--devices 2`` trains data-parallel (DDP on CPU, gloo).  Each rank writes what it ended with
(the verdict that stopped the run, or null; the epochs trained) to OUT/rank<R>.json; rank 0
also prints it as one JSON line and, last, the run dir. ``--batch JOBS.json`` trains several
single-device runs in one process (see ``common.main``); each reads its summary from
OUT/rank0.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gates", type=Path, required=True, help="in-flight gate file")
    parser.add_argument("--after-epoch", type=int, default=1)
    parser.add_argument("--collapse-from", type=int, default=0, help="1-based epoch; 0 = never")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes; 2 or more: DDP (gloo)")


def run(args: argparse.Namespace) -> Path | None:
    """Train one run; its run dir on rank 0 (``None`` on the other ranks)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from lightning_digits import DigitsDataModule, DigitsModule  # type: ignore[import-not-found]

    from pytest_mlgates.lightning import GatesCallback

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    pl.seed_everything(args.seed, workers=True, verbose=False)
    gates = GatesCallback(args.gates, after_epoch=args.after_epoch)
    logger = CSVLogger(save_dir=str(args.out), name="lightning_logs")
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices, logger=logger,
                         strategy="ddp" if args.devices > 1 else "auto",
                         callbacks=[ModelCheckpoint(monitor="val_loss", mode="min", save_last=True,
                                                    filename="best-{epoch}-{val_loss:.4f}"), gates],
                         enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                         log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(DigitsModule(collapse_from=args.collapse_from), datamodule=DigitsDataModule())
    verdict = gates.verdict
    summary = json.dumps({"verdict": None if verdict is None else {"criterion": verdict.criterion,
                                                                   "epoch": verdict.epoch, "reason": verdict.reason},
                          "current_epoch": trainer.current_epoch, "global_step": trainer.global_step})
    # every rank's view of the verdict: under DDP each rank must have got rank 0's
    (args.out / f"rank{trainer.global_rank}.json").write_text(summary, encoding="utf-8")
    return Path(logger.log_dir) if trainer.is_global_zero else None


def main() -> None:
    args = common.parse_args(__doc__ or "", add_args)
    run_dir = run(args)
    if run_dir is not None:
        print((args.out / "rank0.json").read_text(encoding="utf-8"))
        print(run_dir)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--batch"]:  # several single-device runs in this process: see common.main
        common.main(run, __doc__ or "", add_args)  # type: ignore[arg-type]
    else:
        main()
