"""Ultralytics classify runs (``runs/classify/train<N>/``), written here as Ultralytics
8.3 writes them: OUT/<fault>/.

Ultralytics does not import here (it imports torchvision, whose registry wheel is built for
CUDA torch and fails beside the CPU torch of this venv), so this script writes its files the
way ``ultralytics.engine.trainer.BaseTrainer`` does, from its source: ``save_metrics``
(results.csv: ``epoch`` from 1, ``time``, ``train/loss``, ``metrics/accuracy_top1``,
``metrics/accuracy_top5``, ``val/loss``, ``lr/pg0..2``, values rounded to 5 digits) and
``save_model`` (``torch.save`` of ``{epoch, best_fitness, model: None, ema: <the whole
nn.Module>, updates, optimizer, train_args, train_metrics, date, version}`` -- a pickle of
the model object, its weights passed through ``nan_to_num_`` first).  The model is the digits
MLP of common.py, trained for real.

When training ends, ``final_eval`` runs ``strip_optimizer`` on last.pt and best.pt: the
model is kept, ``optimizer``/``ema``/``best_fitness``... set to None and ``epoch`` to -1.

Faults: healthy, nan (NaN losses in results.csv; the saved weights are numbers, as
Ultralytics saves them), no_best (weights/best.pt deleted), stopped (killed after its last
epoch's save: last.pt never stripped).
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--faults", default="healthy,nan,no_best")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    import common  # type: ignore[import-not-found]
    import torch
    import yaml

    torch.set_num_threads(1)
    keys = ["epoch", "time", "train/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "val/loss",
            "lr/pg0", "lr/pg1", "lr/pg2"]
    for fault in args.faults.split(","):
        out = (args.out / fault).resolve()
        (out / "weights").mkdir(parents=True, exist_ok=True)
        train_args = {"task": "classify", "mode": "train", "model": "yolo11n-cls.yaml", "epochs": args.epochs,
                      "batch": common.BATCH, "plots": False, "amp": False, "project": str(args.out), "name": fault}
        (out / "args.yaml").write_text(yaml.safe_dump(train_args, sort_keys=False), encoding="utf-8")
        best_fitness = -math.inf
        for epoch, row, model, opt in common.train_epochs(fault, args.epochs):
            metrics = {"train/loss": row["train_loss"], "metrics/accuracy_top1": row["val_acc"],
                       "metrics/accuracy_top5": row["val_top5"], "val/loss": row["val_loss"],
                       "lr/pg0": common.LR, "lr/pg1": common.LR, "lr/pg2": common.LR}
            first = not (out / "results.csv").exists()
            with open(out / "results.csv", "a", newline="") as f:  # BaseTrainer.save_metrics
                if first:
                    f.write(",".join(keys) + "\n")
                f.write(",".join(str(round(v, 5)) for v in [epoch, 1.0, *metrics.values()]) + "\n")
            fitness = (row["val_acc"] + row["val_top5"]) / 2
            ema = copy.deepcopy(model).half()
            for p in ema.parameters():
                p.data.nan_to_num_()
            ckpt = {"epoch": epoch - 1, "best_fitness": best_fitness, "model": None, "ema": ema, "updates": epoch,
                    "optimizer": opt.state_dict(), "train_args": train_args, "train_metrics": metrics,
                    "date": "2026-12-07T00:00:00", "version": "8.3.0"}
            torch.save(ckpt, out / "weights" / "last.pt")
            if fitness > best_fitness:  # NaN never improves
                best_fitness = fitness
                torch.save(ckpt, out / "weights" / "best.pt")
        if fault != "stopped":  # BaseTrainer.final_eval -> strip_optimizer
            for name in ("last.pt", "best.pt"):
                if (out / "weights" / name).exists():
                    stripped = torch.load(out / "weights" / name, weights_only=False)
                    stripped["model"] = stripped["ema"]
                    for key in ("optimizer", "best_fitness", "ema", "updates"):
                        stripped[key] = None
                    stripped["epoch"] = -1
                    torch.save(stripped, out / "weights" / name)
        if fault == "no_best":
            (out / "weights" / "best.pt").unlink()
        print(out)


if __name__ == "__main__":
    main()
