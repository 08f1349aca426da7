"""Train WineNet with a hand-written PyTorch loop.

    python -m wine.train_plain --run-dir runs/plain                       # healthy
    python -m wine.train_plain --run-dir runs/collapsed --drop-class 2    # class 2 never learnt
    python -m wine.train_plain --run-dir runs/nan --nan-at-epoch 3        # weights NaN from epoch 3
    python -m wine.train_plain --run-dir runs/gated --drop-class 2 --gates acceptance/plain.gates.yaml
                                                                          # stopped after epoch 2

The run dir it writes (``acceptance/plain.gates.yaml``'s ``run:`` section says where each
thing is, so no particular layout is needed)::

    runs/plain/
      logs/metrics.csv        one row per epoch, epochs counted from 1
      ckpt/best_val_loss.pt   {epoch, monitor, value, metrics, model_state_dict, optimizer_state_dict}
      ckpt/best_val_f1.pt
      ckpt/last.pt            the resume point, rewritten every epoch
      splits.json             the train/val/test indices into load_wine()

Every checkpoint is written to a temporary file and renamed into place, so a kill at any
moment leaves the previous file whole.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytest_mlgates.inflight import Gates

from model import ModelConfig, build_model, evaluate
from wine.data import NUM_CLASSES, load_data

# one best file per tracked metric, as acceptance/plain.gates.yaml's run.tracked says
TRACKED = {"val_loss": "min", "val_f1": "max"}


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def train_one_epoch(model: torch.nn.Module, loader: Any, optimizer: torch.optim.Optimizer,
                    accumulate: int = 1) -> float:
    """One pass over ``loader``; the optimizer steps once per ``accumulate`` batches, on the
    gradient of their mean loss (``pytest -m preflight`` checks exactly that)."""
    model.train()
    total, seen = 0.0, 0
    optimizer.zero_grad()
    for i, (x, y) in enumerate(loader, start=1):
        loss = F.cross_entropy(model(x), y)
        (loss / accumulate).backward()
        if i % accumulate == 0 or i == len(loader):
            optimizer.step()
            optimizer.zero_grad()
        total += loss.item() * len(y)
        seen += len(y)
    return total / seen


@torch.no_grad()
def validate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    return evaluate(model(x), y, prefix="val_")


def is_better(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train WineNet with a plain PyTorch loop.")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop-class", type=int, choices=range(NUM_CLASSES), default=None,
                        help="fault: remove this class from the training split")
    parser.add_argument("--nan-at-epoch", type=int, default=None,
                        help="fault: the weights turn NaN at the start of this epoch (1-based, "
                             "as the log numbers it), as after a divergence")
    parser.add_argument("--gates", type=Path, default=None,
                        help="in-flight gate file judged after every epoch (its stage: inflight criteria)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    config = ModelConfig()
    data = load_data(seed=args.seed, drop_class=args.drop_class)
    train_set = torch.utils.data.TensorDataset(data.x["train"], data.y["train"])
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    run = args.run_dir
    (run / "logs").mkdir(parents=True, exist_ok=True)
    (run / "splits.json").write_text(json.dumps(data.indices))
    columns = ["epoch", "train_loss", "val_loss", "val_acc", "val_f1",
               *(f"val_recall_{c}" for c in range(NUM_CLASSES))]
    best: dict[str, float | None] = {metric: None for metric in TRACKED}
    # a doomed run stops after its first epochs, not after all of them
    gates = Gates(args.gates, run_dir=run, after_epoch=2) if args.gates else None

    with open(run / "logs" / "metrics.csv", "w", newline="") as log_file:
        log = csv.DictWriter(log_file, fieldnames=columns)
        log.writeheader()
        for epoch in range(1, args.epochs + 1):
            if epoch == args.nan_at_epoch:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(math.nan)
            row = {"epoch": epoch, "train_loss": train_one_epoch(model, loader, optimizer, config.accumulate),
                   **validate(model, data.x["val"], data.y["val"])}
            log.writerow(row)
            log_file.flush()  # a reader (in-flight gates, a colleague) sees every finished epoch

            state = {"epoch": epoch, "metrics": row, "model_state_dict": model.state_dict(),
                     "optimizer_state_dict": optimizer.state_dict()}
            for metric, mode in TRACKED.items():
                if is_better(row[metric], best[metric], mode):
                    best[metric] = row[metric]
                    save_atomic({**state, "monitor": metric, "value": row[metric]},
                                run / "ckpt" / f"best_{metric}.pt")
            save_atomic(state, run / "ckpt" / "last.pt")
            print(f"epoch {epoch:3d}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
                  f"val_f1 {row['val_f1']:.3f}")
            if gates is not None:  # after the epoch's log row and checkpoints are on disk
                verdict = gates.check(epoch)
                if verdict.red:
                    print(f"stopped by an in-flight gate: {verdict.reason}")
                    break


if __name__ == "__main__":
    main()
