"""timm ``train.py`` output folders written by timm itself: OUT/<fault>/.

Runs in a venv where timm imports (its torchvision needs a torch it was built for: see
``vision_python`` in tests/conftest.py).  The loop is the digits MLP of common.py, trained
for real; the files are timm's own writers', as its ``train.py`` calls them:
``timm.utils.update_summary`` (summary.csv: ``epoch`` from 0, ``train_<k>``, ``eval_<k>``,
``lr``), ``timm.utils.CheckpointSaver.save_checkpoint`` (``last.pth.tar``,
``checkpoint-<epoch>.pth.tar``, ``model_best.pth.tar`` when the metric improves: a dict
whose ``args`` is the ``argparse.Namespace`` of train.py, which ``weights_only=True``
refuses) and args.yaml as train.py dumps it.

    args.yaml             eval_metric: loss (model_best follows eval_loss, lowest)
    summary.csv           epoch, train_loss, eval_loss, eval_top1, eval_top5 (percent),
                          eval_recall_<c>, eval_min_recall (a custom validate's extras), lr

Faults: healthy, collapsed, nan, no_best (model_best.pth.tar deleted).
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
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
    from timm.utils import CheckpointSaver, update_summary

    torch.set_num_threads(1)
    for fault in args.faults.split(","):
        out = (args.out / fault).resolve()
        out.mkdir(parents=True, exist_ok=True)
        train_args = argparse.Namespace(model="digits_mlp", lr=common.LR, epochs=args.epochs, eval_metric="loss",
                                        batch_size=common.BATCH, output=str(args.out))
        with open(out / "args.yaml", "w") as f:  # train.py: yaml.safe_dump(args.__dict__, ...)
            f.write(yaml.safe_dump(train_args.__dict__, default_flow_style=False))
        saver = None
        for epoch, row, model, opt in common.train_epochs(fault, args.epochs):
            if saver is None:  # train.py: decreasing when eval_metric is loss
                saver = CheckpointSaver(model=model, optimizer=opt, args=train_args, checkpoint_dir=str(out),
                                        recovery_dir=str(out), decreasing=True, max_history=2)
            train_metrics = OrderedDict([("loss", row["train_loss"])])
            eval_metrics = OrderedDict([("loss", row["val_loss"]), ("top1", 100 * row["val_acc"]),
                                        ("top5", 100 * row["val_top5"]),
                                        *((f"recall_{c}", row[f"val_recall_{c}"]) for c in range(common.CLASSES)),
                                        ("min_recall", row["val_min_recall"])])
            update_summary(epoch - 1, train_metrics, eval_metrics, filename=str(out / "summary.csv"),
                           lr=common.LR, write_header=epoch == 1)
            saver.save_checkpoint(epoch - 1, metric=row["val_loss"])
        if fault == "no_best":
            (out / "model_best.pth.tar").unlink()
        print(out)


if __name__ == "__main__":
    main()
