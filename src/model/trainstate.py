"""What a run carries across a kill: :class:`TrainState`, and the ``last.pt`` dict that holds it.

:func:`make_checkpoint` packs model, EMA, optimizer, scheduler, scaler, every rank's RNG
and the state (position, history, bests, early stopping) into plain builtins and tensors
(the format of docs/internals.md); :func:`resume_from` puts them back, in that order, and
returns the state -- which is what makes a resumed run bit-exact with one never killed.
The files themselves are written by :mod:`model.checkpoint` (atomic, safe to open).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from torch import nn

from model import distributed, runlog
from model.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    pack_history,
    restore_rng,
    unpack_history,
)
from model.config import Config
from model.data import Dataset

log = logging.getLogger(runlog.LOGGER_NAME)


@dataclasses.dataclass
class TrainState:
    """What a resumed run must get back besides tensors: position, history, bests."""

    epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # metric -> epoch, value, mode
    es_best: float | None = None  # early stopping's best monitored value
    bad_epochs: int = 0  # epochs since it last improved

    @classmethod
    def fresh(cls, config: Config) -> TrainState:
        return cls()

    def update_best(self, config: Config, row: dict[str, Any]) -> list[str]:
        """Record new bests; returns the tracked metrics that improved this epoch."""
        improved = []
        for tracked in config.checkpoint.tracked:
            value = float(row[tracked.metric])
            old = self.best.get(tracked.metric)
            if is_better(value, None if old is None else old["value"], tracked.mode):
                self.best[tracked.metric] = {"epoch": int(row["epoch"]), "value": value,
                                             "mode": tracked.mode}
                improved.append(tracked.metric)
        return improved

    def update_early_stopping(self, config: Config, row: dict[str, Any]) -> None:
        es = config.train.early_stopping
        if es is None:
            return
        value = float(row[es.monitor])
        if is_better(value, self.es_best, es.mode):
            self.es_best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1

    def early_stopped(self, config: Config) -> bool:
        es = config.train.early_stopping
        return es is not None and self.bad_epochs >= es.patience

    def early_stop_reason(self, config: Config) -> str:
        es = config.train.early_stopping
        assert es is not None
        best = "nan" if self.es_best is None else f"{self.es_best:.6g}"
        return (f"{es.monitor} did not improve for {self.bad_epochs} epochs "
                f"(patience {es.patience}, best {best})")


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Strictly better than `best`; NaN never counts as best."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


def make_checkpoint(config: Config, dataset: Dataset, model: nn.Module,
                    ema_model: nn.Module | None, optimizer: Any, scheduler: Any, scaler: Any,
                    state: TrainState, row: dict[str, Any], rng: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint dict of docs/internals.md (plain builtins and tensors only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "ema": ema_model.state_dict() if ema_model is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "metrics": dict(row),
        # the tracked metrics whose best so far is this epoch: what the best_<metric>.pt
        # files written from this checkpoint are the best for
        "monitor": {metric: {"mode": best["mode"], "value": best["value"]}
                    for metric, best in state.best.items() if best["epoch"] == state.epoch} or None,
        "best": {metric: dict(best) for metric, best in state.best.items()},  # flat dicts
        "early_stopping": {"best": state.es_best, "bad_epochs": state.bad_epochs},
        "config": config.to_dict(),
        "class_names": list(dataset.class_names),
        "input_shape": list(dataset.input_shape),
        "normalization": {k: list(v) for k, v in dataset.normalization.items()},
        "rng": {**rng[0], "ranks": rng} if len(rng) > 1 else rng[0],
        "history": pack_history(state.history),  # one tensor: a save costs the same at any epoch
        "world_size": len(rng),
    }


def resume_from(ckpt: dict[str, Any], config: Config, dataset: Dataset,
                dist: distributed.DistInfo, model: nn.Module, ema_model: nn.Module | None,
                optimizer: Any, scheduler: Any, scaler: Any) -> TrainState:
    """Restore, in this order: model, EMA, optimizer, scheduler, scaler, RNG; then state."""
    old = ckpt.get("config") or {}
    if old.get("seed") != config.seed:
        log.warning("resuming with seed %s but the checkpoint was trained with seed %s",
                    config.seed, old.get("seed"))
    old_epochs = (old.get("train") or {}).get("epochs")
    if old_epochs != config.train.epochs:
        log.warning("resuming with train.epochs=%s but the checkpoint was planned for %s",
                    config.train.epochs, old_epochs)
    if ckpt.get("normalization") != {k: list(v) for k, v in dataset.normalization.items()}:
        log.warning("normalization stats differ from the checkpoint's: the data changed since "
                    "the run started (mean %s vs %s)", dataset.normalization.get("mean"),
                    (ckpt.get("normalization") or {}).get("mean"))
    try:
        model.load_state_dict(ckpt["model"])
        if ema_model is not None:
            ema_model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        line = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoints/last.pt does not fit this config ({line}); "
                              "start over with --fresh") from None
    rng = ckpt["rng"]
    ranks = rng.get("ranks") if isinstance(rng, dict) else None
    if ranks and len(ranks) == dist.world_size:
        restore_rng(ranks[dist.rank])
    else:
        if int(ckpt.get("world_size", 1)) != dist.world_size:
            log.warning("resuming with world size %d but the checkpoint was written with %s: "
                        "the data order per rank differs", dist.world_size, ckpt.get("world_size"))
        restore_rng(rng)
    es = ckpt.get("early_stopping") or {}
    return TrainState(
        epoch=int(ckpt["epoch"]), global_step=int(ckpt["global_step"]),
        history=unpack_history(ckpt.get("history")),
        best={k: dict(v) for k, v in (ckpt.get("best") or {}).items()},
        es_best=es.get("best"), bad_epochs=int(es.get("bad_epochs", 0)))
