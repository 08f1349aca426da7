"""Data, metrics, faults and the plain PyTorch loop shared by the trainer fixture scripts.

The scripts make real run dirs for the reader tests; every one of them trains the same
model on the same split, so a gate file gives the same verdict whichever trainer wrote the
run. ``--fault`` breaks a run in one known way so that tests can check the gates go RED.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

FAULTS = ("healthy", "collapsed", "nan", "no_best")
COLLAPSED_CLASS = 3
NAN_AFTER_EPOCH = 2  # 1-based: the params turn NaN once epoch 2 is done, so epoch 3 is NaN
CLASSES = 10
LR = 1e-2
BATCH = 64
HIDDEN = 32


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None,
               argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every script shares: OUT_DIR [--fault F] [--epochs N] [--seed S]."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out", type=Path, help="output directory (created)")
    parser.add_argument("--fault", choices=FAULTS, default="healthy")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    # a 64->32->10 MLP: a second intra-op thread only spins against the other test processes
    torch.set_num_threads(1)
    if args.fault == "nan" and args.epochs <= NAN_AFTER_EPOCH:
        parser.error(f"--fault nan needs --epochs > {NAN_AFTER_EPOCH}")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def main(run: Callable[[argparse.Namespace], Path], description: str,
         extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """A script's entry point: ``script.py OUT [options]`` trains one run and prints its run
    dir; ``script.py --batch JOBS.json`` trains several, one after the other in this process
    (the trainer library is imported once): JOBS.json is a list of command lines, each a run
    of its own (its own OUT, seed, trainer object), and each run's dir is printed as
    ``run-dir <index> <path>``."""
    if sys.argv[1:2] == ["--batch"] and len(sys.argv) == 3:
        jobs = json.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))
        for index, argv in enumerate(jobs):
            print(f"run-dir {index} {run(parse_args(description, extra, list(argv)))}", flush=True)
    else:
        print(run(parse_args(description, extra)))


def load_split(fault: str = "healthy") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits scaled to [0, 1]: (x_train, y_train, x_val, y_val), the same split every time.

    ``collapsed`` drops every training sample of class 3, so the model never predicts it.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int64")
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    if fault == "collapsed":
        keep = y_tr != COLLAPSED_CLASS
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_va),
            torch.from_numpy(y_va))


def metrics(logits: Any, y: Any) -> dict[str, float]:
    """recall_<c> for c in 0..9 (NaN for a class absent from y), min_recall over the rest, acc."""
    logits_t = torch.as_tensor(logits)
    y_t = torch.as_tensor(y)
    pred = logits_t.argmax(dim=-1)
    out: dict[str, float] = {}
    for c in range(CLASSES):
        mask = y_t == c
        n = int(mask.sum())
        out[f"recall_{c}"] = float((pred[mask] == c).sum()) / n if n else math.nan
    present = [v for v in out.values() if not math.isnan(v)]
    out["min_recall"] = min(present) if present else math.nan
    out["acc"] = float((pred == y_t).float().mean()) if len(y_t) else math.nan
    return out


def poison(model: torch.nn.Module) -> None:
    """The ``nan`` fault: every parameter becomes NaN, so every later loss is NaN."""
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)


def save_checkpoint(path: Path, model: torch.nn.Module, epoch: int, val_loss: float | None) -> None:
    """Atomic torch.save of plain tensors/ints/floats/strs, so weights_only=True opens it."""
    state: dict[str, Any] = {"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                             "epoch": epoch}
    if val_loss is not None:
        state["monitor"] = {"metric": "val_loss", "mode": "min", "value": float(val_loss)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def plain_loop(args: argparse.Namespace, ckpt_dir: Path,
               on_epoch: Callable[[int, dict[str, float]], None],
               on_checkpoint: Callable[[Path], None] = lambda p: None) -> None:
    """Train DigitsMLP with a bare loop; epochs count from 1.

    ``on_epoch(epoch, row)`` gets train_loss, val_loss, val_acc, val_recall_<c>,
    val_min_recall. Checkpoints go to ``ckpt_dir`` (best_val_loss.pt when val_loss improves,
    final.pt at the end) and each written path is passed to ``on_checkpoint``.
    """
    from digits_model import DigitsMLP  # type: ignore[import-not-found]  # scripts run from here

    torch.manual_seed(args.seed)
    x_tr, y_tr, x_va, y_va = load_split(args.fault)
    model = DigitsMLP(hidden=HIDDEN)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(args.seed)
    best = math.inf
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for idx in torch.randperm(len(y_tr), generator=gen).split(BATCH):
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(x_va)
            val_loss = float(torch.nn.functional.cross_entropy(logits, y_va))
        m = metrics(logits, y_va)
        row = {"train_loss": total / seen, "val_loss": val_loss, "val_acc": m["acc"],
               **{f"val_recall_{c}": m[f"recall_{c}"] for c in range(CLASSES)},
               "val_min_recall": m["min_recall"]}
        on_epoch(epoch, row)
        if val_loss < best:  # NaN never improves
            best = val_loss
            save_checkpoint(ckpt_dir / "best_val_loss.pt", model, epoch, val_loss)
            on_checkpoint(ckpt_dir / "best_val_loss.pt")
        if args.fault == "nan" and epoch == NAN_AFTER_EPOCH:
            poison(model)
    save_checkpoint(ckpt_dir / "final.pt", model, args.epochs, None)
    on_checkpoint(ckpt_dir / "final.pt")


def train_epochs(fault: str, epochs: int, seed: int = 0,
                 ) -> Iterator[tuple[int, dict[str, float], torch.nn.Module, torch.optim.Optimizer]]:
    """The loop of :func:`plain_loop` without its files: ``(epoch from 1, row, model,
    optimizer)`` after each epoch, for scripts that write a trainer's own files. The ``nan``
    fault poisons the model once epoch :data:`NAN_AFTER_EPOCH` has been yielded."""
    from digits_model import DigitsMLP  # type: ignore[import-not-found]

    torch.manual_seed(seed)
    x_tr, y_tr, x_va, y_va = load_split(fault)
    model = DigitsMLP(hidden=HIDDEN)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for idx in torch.randperm(len(y_tr), generator=gen).split(BATCH):
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(x_va)
            val_loss = float(torch.nn.functional.cross_entropy(logits, y_va))
            top5 = float((logits.topk(5, dim=-1).indices == y_va[:, None]).any(dim=-1).float().mean())
        m = metrics(logits, y_va)
        row = {"train_loss": total / seen, "val_loss": val_loss, "val_acc": m["acc"], "val_top5": top5,
               **{f"val_recall_{c}": m[f"recall_{c}"] for c in range(CLASSES)},
               "val_min_recall": m["min_recall"]}
        yield epoch, row, model, opt
        if fault == "nan" and epoch == NAN_AFTER_EPOCH:
            poison(model)
