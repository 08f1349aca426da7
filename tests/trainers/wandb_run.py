"""Real W&B offline runs of the plain digits loop (tests/trainers/common.py): OUT/<fault>/.

    wandb/offline-run-<time>-<id>/run-<id>.wandb   every history row (W&B 0.31 writes metrics
                                                   only here offline), config, exit
    wandb/offline-run-<time>-<id>/files/           run.dir: the loop's checkpoints
                                                   (best_val_loss.pt, final.pt) saved there

Keys logged: epoch (from 1), train/loss, val_loss, val_acc, val_recall_<c>, val_min_recall.
One process makes every fault named; no network (WANDB_MODE=offline).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--faults", default="healthy,collapsed,nan,no_best")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_GIT="true")
    import common  # type: ignore[import-not-found]
    import wandb

    for fault in args.faults.split(","):
        out = (args.out / fault).resolve()
        out.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project="digits", dir=str(out), mode="offline", config={"lr": common.LR, "fault": fault},
                         settings=wandb.Settings(console="off", x_disable_stats=True, save_code=False))
        files = Path(run.dir)
        loop = argparse.Namespace(out=out, fault=fault, epochs=args.epochs, seed=0)

        def log(epoch: int, row: dict[str, float], run: object = run) -> None:
            run.log({"epoch": epoch, "train/loss": row["train_loss"],  # type: ignore[attr-defined]
                     **{k: v for k, v in row.items() if k != "train_loss"}})

        common.plain_loop(loop, files, log)
        run.finish()
        if fault == "no_best":
            (files / "best_val_loss.pt").unlink()
        print(out)


if __name__ == "__main__":
    main()
