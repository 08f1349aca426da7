"""A plain PyTorch run that logs to TensorBoard event files: the run dir is OUT.

OUT/events.out.tfevents.* holds scalars train_loss, val_loss, val_acc, val_recall_<c>,
val_min_recall at step=epoch (from 1); OUT/checkpoints/ holds best_val_loss.pt and final.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]


def run(args: argparse.Namespace) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(args.out))

    def log(epoch: int, row: dict[str, float]) -> None:
        for key, value in row.items():
            writer.add_scalar(key, value, global_step=epoch)

    try:
        common.plain_loop(args, args.out / "checkpoints", log)
    finally:
        writer.close()
    if args.fault == "no_best":
        (args.out / "checkpoints" / "best_val_loss.pt").unlink()
    return args.out


if __name__ == "__main__":
    common.main(run, __doc__ or "")
