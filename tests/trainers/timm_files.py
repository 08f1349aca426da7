"""timm ``train.py`` output folders, written here as timm writes them: OUT/<fault>/.

timm does not import here (it imports torchvision, whose registry wheel is built for CUDA
torch and fails beside the CPU torch of this venv: ``operator torchvision::nms does not
exist``), so this script writes the files the way timm 1.0's writers do, from its source:
``timm.utils.update_summary`` (a csv.DictWriter of ``epoch``, ``train_<k>``, ``eval_<k>``,
``lr``; the header written with the first row) and ``timm.utils.CheckpointSaver``
(``torch.save`` of ``{epoch, arch, state_dict, optimizer, version: 2, args, metric}`` where
``args`` is the ``argparse.Namespace`` of train.py -- what ``weights_only=True`` refuses).
The model is the digits MLP of common.py, trained for real; epochs count from 0.

    args.yaml             eval_metric: loss (model_best follows eval_loss, lowest)
    summary.csv           epoch, train_loss, eval_loss, eval_top1, eval_top5 (percent),
                          eval_recall_<c>, eval_min_recall (a custom validate's extras), lr
    model_best.pth.tar    when eval_loss is strictly better (timm keeps the first of a tie)
    last.pth.tar          every epoch: the resume point

Faults: healthy, collapsed, nan, no_best (model_best.pth.tar deleted).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--faults", default="healthy,collapsed,nan,no_best")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    import common  # type: ignore[import-not-found]
    import torch
    import yaml

    torch.set_num_threads(1)
    for fault in args.faults.split(","):
        out = (args.out / fault).resolve()
        out.mkdir(parents=True, exist_ok=True)
        train_args = argparse.Namespace(model="digits_mlp", lr=common.LR, epochs=args.epochs, eval_metric="loss",
                                        batch_size=common.BATCH, output=str(args.out))
        (out / "args.yaml").write_text(yaml.safe_dump(vars(train_args), default_flow_style=False), encoding="utf-8")
        best = math.inf
        for epoch, row, model, opt in common.train_epochs(fault, args.epochs):
            eval_metrics = {"loss": row["val_loss"], "top1": 100 * row["val_acc"], "top5": 100 * row["val_top5"],
                            **{f"recall_{c}": row[f"val_recall_{c}"] for c in range(common.CLASSES)},
                            "min_recall": row["val_min_recall"]}
            # timm.utils.update_summary
            summary = {"epoch": epoch - 1, "train_loss": row["train_loss"],
                       **{f"eval_{k}": v for k, v in eval_metrics.items()}, "lr": common.LR}
            first = not (out / "summary.csv").exists()
            with open(out / "summary.csv", "a", newline="") as cf:
                dw = csv.DictWriter(cf, fieldnames=summary.keys())
                if first:
                    dw.writeheader()
                dw.writerow(summary)
            # timm.utils.CheckpointSaver.save_checkpoint
            state = {"epoch": epoch - 1, "arch": "digits_mlp", "state_dict": model.state_dict(),
                     "optimizer": opt.state_dict(), "version": 2, "args": train_args, "metric": row["val_loss"]}
            torch.save(state, out / "last.pth.tar")
            if row["val_loss"] < best:
                best = row["val_loss"]
                torch.save(state, out / "model_best.pth.tar")
        if fault == "no_best":
            (out / "model_best.pth.tar").unlink()
        print(out)


if __name__ == "__main__":
    main()
