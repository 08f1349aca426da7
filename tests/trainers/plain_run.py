"""A hand-written PyTorch loop, the way many users write one: the run dir is OUT.

No trainer library and no layout of the plugin's: the gate file's ``run:`` section says
where things are (tests/trainers/plain.gates.yaml)::

    OUT/logs/metrics.csv      epoch (from 1), train_loss, val_loss, val_acc, val_recall_<c>,
                              val_min_recall: one row per epoch
    OUT/logs/metrics.jsonl    the same rows, one JSON object per line
    OUT/ckpt/best_val_loss.pt, best_val_min_recall.pt
                              {"epoch", "monitor", "value", "model_state_dict"} when it improves
    OUT/ckpt/last.pt          every epoch: model_state_dict, optimizer_state_dict,
                              scheduler_state_dict, epoch
    OUT/splits.json           {"train": [indices], "val": [indices]} into load_digits()
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]
import torch
from digits_model import DigitsMLP  # type: ignore[import-not-found]

TRACKED = {"val_loss": "min", "val_min_recall": "max"}


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file, then rename: a kill never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def split_indices(fault: str) -> tuple[list[int], list[int]]:
    """The indices common.load_split uses (same seed, same stratification)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    train, val = train_test_split(np.arange(len(y)), test_size=0.3, random_state=0, stratify=y)
    if fault == "collapsed":
        train = train[y[train] != common.COLLAPSED_CLASS]
    return [int(i) for i in train], [int(i) for i in val]


def run(args: argparse.Namespace) -> Path:
    out: Path = args.out
    torch.manual_seed(args.seed)
    x_tr, y_tr, x_va, y_va = common.load_split(args.fault)
    model = DigitsMLP(hidden=common.HIDDEN)
    optimizer = torch.optim.Adam(model.parameters(), lr=common.LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    gen = torch.Generator().manual_seed(args.seed)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    train_ids, val_ids = split_indices(args.fault)
    (out / "splits.json").write_text(json.dumps({"train": train_ids, "val": val_ids}))
    best = {m: (math.inf if mode == "min" else -math.inf) for m, mode in TRACKED.items()}
    rows: list[dict[str, float]] = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for idx in torch.randperm(len(y_tr), generator=gen).split(common.BATCH):
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        scheduler.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_va)
            val_loss = float(torch.nn.functional.cross_entropy(logits, y_va))
        m = common.metrics(logits, y_va)
        row = {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, "val_acc": m["acc"],
               **{f"val_recall_{c}": m[f"recall_{c}"] for c in range(common.CLASSES)},
               "val_min_recall": m["min_recall"]}
        rows.append(row)
        header = list(row)
        (out / "logs" / "metrics.csv").write_text(
            ",".join(header) + "\n" + "".join(",".join(repr(r[h]) for h in header) + "\n" for r in rows))
        with open(out / "logs" / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: (v if not (isinstance(v, float) and math.isnan(v)) else "nan")
                                 for k, v in row.items()}) + "\n")
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for metric, mode in TRACKED.items():
            value = row[metric]
            if (value < best[metric]) if mode == "min" else (value > best[metric]):  # NaN never improves
                best[metric] = value
                save(out / "ckpt" / f"best_{metric}.pt",
                     {"epoch": epoch, "monitor": metric, "value": value, "model_state_dict": weights})
        save(out / "ckpt" / "last.pt", {"epoch": epoch, "model_state_dict": weights,
                                        "optimizer_state_dict": optimizer.state_dict(),
                                        "scheduler_state_dict": scheduler.state_dict()})
        if args.fault == "nan" and epoch == common.NAN_AFTER_EPOCH:
            common.poison(model)
    if args.fault == "no_best":
        (out / "ckpt" / "best_val_loss.pt").unlink()
    return out


if __name__ == "__main__":
    common.main(run, __doc__ or "")
