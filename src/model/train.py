"""The whole story of a training run, top to bottom: :func:`train`.

Read it like nanoGPT's ``train.py`` or the PyTorch ImageNet example: set up, resume if
there is something to resume, loop over epochs (:func:`train_one_epoch`,
:func:`evaluate`, the checkpoint and logs, handed to a writer thread), then finish (final
checkpoint, test split, plots). With ``tracking:`` in the config, MLflow or W&B get the
params, each epoch's metrics and the end status too (:mod:`model.tracking`).
There is no trainer class and no callback framework; the helpers below ``train`` are
plain functions with the names you would guess.

What it does that the usual loops do not:

* every file in the run dir is written atomically, so a SIGKILL never leaves half a file;
* ``last.pt`` holds model, EMA, optimizer, scheduler, scaler, every RNG, the history and
  the best-so-far / early-stopping state, and the loader order is a function of
  ``(seed, epoch)`` -- so a resumed run is bit-exact with one that was never killed;
* one ``best_<metric>.pt`` per tracked metric, and a tracked metric or early-stopping
  monitor that the engine does not log is refused before the first batch.

Example::

    >>> from model.config import load_config
    >>> results = train(load_config("configs/default.yaml"), "runs/default",
    ...                 config_path="configs/default.yaml")
    >>> results["status"]
    'completed'
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import distributed, runlog
from model.checkpoint import (
    CHECKPOINT_FORMAT,
    BackgroundWriter,
    CheckpointError,
    atomic_write_text,
    capture_rng,
    load_checkpoint,
    pack_history,
    remove_stale_temp_files,
    restore_rng,
    save_checkpoint,
    unpack_history,
)
from model.config import Config, ConfigError, dump_yaml, file_sha256
from model.data import Dataset, build_dataset
from model.metrics import classification_metrics
from model.nets import build_model
from model.runlog import (
    RunDirError,
    json_text,
    log_columns,
    render_history,
    write_history,
    write_json,
)
from model.tracking import Trackers, check_installed, open_trackers

InflightHook = Callable[[Path, int], "str | None"]

FINISHED_STATUSES = ("completed", "early_stopped", "aborted_by_gate")

log = logging.getLogger(runlog.LOGGER_NAME)


class TrainSetupError(Exception):
    """A run that must not start (refused defaults, untracked metric ...), in one line."""


# =========================================================================== the story


def train(
    config: Config,
    run_dir: str | Path,
    *,
    fresh: bool = False,
    config_path: str | Path | None = None,
    argv: list[str] | None = None,
    allow_defaults: bool = False,
    inflight_hook: InflightHook | None = None,
) -> dict[str, Any]:
    """Train `config` into `run_dir` (resuming from its ``last.pt`` unless `fresh`).

    Returns the content of ``training_results.json``. Raises ``TrainSetupError``,
    ``ConfigError``, ``RunDirError`` or ``CheckpointError`` (one line each) before
    training for a run that cannot start; any other exception during training is
    recorded as status ``failed`` and re-raised.
    """
    run_dir = Path(run_dir)
    refuse_defaults(config, config_path, allow_defaults)

    # ---- 1. processes, device, seeds
    dist = distributed.setup()
    try:
        return _train(config, run_dir, dist, fresh=fresh, config_path=config_path, argv=argv,
                      allow_defaults=allow_defaults, inflight_hook=inflight_hook)
    finally:
        runlog.close_logging()
        distributed.teardown(dist)


def _train(config: Config, run_dir: Path, dist: distributed.DistInfo, *, fresh: bool,
           config_path: str | Path | None, argv: list[str] | None, allow_defaults: bool,
           inflight_hook: InflightHook | None) -> dict[str, Any]:
    device = torch.device(dist.device)
    # Seeds and RNG state are all a CPU run needs to be bit-exact: the ops used here are
    # deterministic on CPU (tests/test_resume.py proves it). torch.use_deterministic_algorithms
    # is left off: in torch 2.13 it imports the compiler stack, ~4 s of start-up per run.
    seed_everything(config.seed)
    tc = config.train

    # ---- 2. data, and everything we can refuse before touching the run dir
    check_installed(config)  # a tracker's package
    dataset = build_dataset(config)
    class_names = list(dataset.class_names)
    columns = log_columns(class_names)
    check_logged_names(config, columns)
    class_weights = compute_class_weights(tc.class_weights, dataset)

    # ---- 3. run dir and logging (rank 0 writes; the others only read)
    if dist.is_main:
        runlog.prepare_run_dir(run_dir, fresh=fresh)
        remove_stale_temp_files(run_dir / "checkpoints")
        remove_stale_temp_files(run_dir)
        remove_stale_temp_files(run_dir / "plots")  # a plot child killed mid-write
    distributed.barrier(dist)
    runlog.setup_logging(run_dir if dist.is_main else None, verbose=dist.is_main)
    paths = RunPaths(run_dir)

    finished = previous_finished_results(paths) if not fresh else None
    if finished is not None:
        missing = missing_plots(paths) if dist.is_main and finished.get("final") else []
        if missing:  # the run was killed while its plot child drew them
            log.info("drawing the plots the stopped run did not finish: %s", ", ".join(missing))
            draw_plots(paths, [finished["final"]], class_names)
        log.info("run in %s already finished (status %s); nothing to do (use --fresh to retrain)",
                 run_dir, finished["status"])
        finished["already_finished"] = True
        return finished

    if inflight_hook is None:
        inflight_hook = load_inflight_hook(config, run_dir)

    # ---- 4. model, EMA, loss, optimizer, schedule, scaler
    model = build_model(config.model, dataset.input_shape, len(class_names)).to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False) if tc.ema_decay > 0 else None
    criterion = nn.CrossEntropyLoss(
        weight=None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32,
                                                               device=device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    val_loader = dataset.loader("val", tc.batch_size, shuffle=False, seed=config.seed, epoch=0,
                                num_workers=config.data.num_workers)
    steps_per_epoch = math.ceil(len(train_loader_for(dataset, config, dist, epoch=1)) / tc.accumulate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(tc.warmup_epochs * steps_per_epoch, tc.epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    # ---- 5. resume from last.pt, or start at epoch 0
    state = TrainState.fresh(config)
    if not fresh and paths.last.is_file():
        try:
            ckpt = load_checkpoint(paths.last)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; start over with --fresh") from None
        state = resume_from(ckpt, config, dataset, dist, model, ema_model, optimizer, scheduler,
                            scaler)
        log.info("resumed from %s at epoch %d", paths.last, state.epoch)

    # ---- 6. run files and trackers (rank 0 writes the run dir and talks to the trackers)
    trackers = Trackers([])
    if dist.is_main:
        previous = read_provenance(paths) if not fresh else {}
        rng_before = capture_rng()  # importing mlflow or wandb must not shift a bit-exact resume
        trackers = open_trackers(config, run_dir, previous.get("tracking"))
        write_run_files(paths, config, dataset, config_path, argv, allow_defaults, dist,
                        previous, resumed_at=state.epoch if state.epoch else None,
                        tracking=trackers.ids())
        write_history(run_dir, columns, state.history)
        write_results(paths, config, state, class_names, status="running",
                      reason=f"training, epoch {state.epoch}/{tc.epochs} done")
        trackers.catch_up(state.history)  # epochs a kill kept from the tracker
        restore_rng(rng_before)
    log.info("training %s on %s (%s, world size %d): %d epochs, effective batch %d",
             config.data.name, device, config.model.name, dist.world_size, tc.epochs,
             tc.batch_size * tc.accumulate * dist.world_size)

    raw_model = model
    if dist.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)

    # ---- 7. the epochs (rank 0's files are written by a background thread, in order)
    status, reason = "completed", f"trained all {tc.epochs} epochs"
    writer = BackgroundWriter() if dist.is_main else None
    try:
        if state.early_stopped(config):
            status, reason = "early_stopped", state.early_stop_reason(config)
        if (writer is not None and inflight_hook is not None and status == "completed"
                and state.epoch and state.epoch >= config.gates.after_epoch):
            # Resumed: a kill between the last epoch's files and its gate check would let
            # a doomed run go on, so the last epoch is checked again before training more.
            rng_before = capture_rng()
            red = inflight_hook(run_dir, state.epoch)
            restore_rng(rng_before)  # the check must not shift the RNG streams of a bit-exact resume
            if red:
                status, reason = "aborted_by_gate", " ".join(str(red).split())
                log.warning("in-flight gate RED after epoch %d (checked on resume): %s", state.epoch, reason)
        status, reason = distributed.broadcast_object(dist, (status, reason))
        for epoch in range(state.epoch + 1, tc.epochs + 1):
            if status != "completed":
                break
            started = time.perf_counter()
            train_loader = train_loader_for(dataset, config, dist, epoch)
            train_loss, train_accuracy, lr = train_one_epoch(
                model, raw_model, ema_model, train_loader, criterion, optimizer, scheduler, scaler,
                autocast, state, config, dist, epoch)
            distributed.broadcast_buffers(dist, raw_model, ema_model)  # BatchNorm stats agree
            eval_model = ema_model if ema_model is not None else raw_model
            val = evaluate(eval_model, val_loader, criterion, class_names, "val", device, autocast)
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                   **val, "lr": lr, "epoch_seconds": time.perf_counter() - started}
            state.epoch = epoch
            state.history.append(row)
            newly_best = state.update_best(config, row)
            state.update_early_stopping(config, row)

            # every rank's RNG, so a resumed DDP run replays each rank's stream too
            rng = distributed.gather_objects(dist, capture_rng())
            if writer is not None:  # rank 0: the trackers get the epoch once it is on disk
                ckpt = make_checkpoint(config, dataset, raw_model, ema_model, optimizer, scheduler,
                                       scaler, state, row, rng)
                writer.submit(epoch_files(paths, ckpt, columns, config, state, newly_best,
                                          class_names),
                              then=functools.partial(trackers.log_epoch, row))
            log.info(format_epoch_line(row, tc.epochs, newly_best))

            # rank 0 decides whether to stop; every rank follows the same decision
            if writer is not None:
                if state.early_stopped(config):
                    status, reason = "early_stopped", state.early_stop_reason(config)
                if epoch >= config.gates.after_epoch and inflight_hook is not None:
                    writer.wait()  # the hook reads this epoch's files
                    red = inflight_hook(run_dir, epoch)
                    if red:
                        status, reason = "aborted_by_gate", " ".join(str(red).split())
                        log.warning("in-flight gate RED after epoch %d: %s", epoch, reason)
            status, reason = distributed.broadcast_object(dist, (status, reason))
            restore_rng(rng[dist.rank])  # nothing at the epoch's end may shift the RNG streams

        # ---- 8. finish: final checkpoint, the test split, results, plots, trackers
        test = None
        if len(dataset.splits["test"]):
            test_loader = dataset.loader("test", tc.batch_size, shuffle=False, seed=config.seed,
                                         epoch=0, num_workers=config.data.num_workers)
            eval_model = ema_model if ema_model is not None else raw_model
            test = evaluate(eval_model, test_loader, criterion, class_names, "test", device,
                            autocast)
        results = {"status": status, "reason": reason}
        if writer is not None:  # rank 0
            writer.close()  # the last epoch's files are on disk (or their error raised)
            final_row = state.history[-1] if state.history else {}
            ckpt = make_checkpoint(config, dataset, raw_model, ema_model, optimizer, scheduler,
                                   scaler, state, final_row, [capture_rng()])
            save_checkpoint(ckpt, paths.final)
            results = write_results(paths, config, state, class_names, status=status,
                                    reason=reason, test=test)
            finish_provenance(paths)
            draw_plots(paths, state.history, class_names)
        log.info("%s: %s; run dir %s", status, reason, run_dir)
        trackers.finish(status, reason, run_dir)
        return results
    except BaseException as exc:
        line = " ".join(str(exc).split()) or exc.__class__.__name__
        log.error("training failed at epoch %d: %s: %s", state.epoch + 1,
                  exc.__class__.__name__, line, exc_info=not isinstance(exc, KeyboardInterrupt))
        if writer is not None:  # rank 0
            reason = f"{exc.__class__.__name__}: {line}"
            with contextlib.suppress(BaseException):
                writer.close()  # nothing of it may land after the results below
            with contextlib.suppress(Exception):
                write_results(paths, config, state, class_names, status="failed", reason=reason)
                finish_provenance(paths)
                draw_plots(paths, state.history, class_names)
            trackers.finish("failed", reason, run_dir)
        raise


# =========================================================================== one epoch


def train_one_epoch(model: nn.Module, raw_model: nn.Module, ema_model: nn.Module | None,
                    loader: Any, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: Any, autocast: Any, state: TrainState,
                    config: Config, dist: distributed.DistInfo,
                    epoch: int) -> tuple[float, float, float]:
    """One pass over the training split; returns (mean loss, accuracy, lr of the last step).

    Gradients of ``train.accumulate`` batches are summed before one optimizer step; each
    batch's loss is divided by the size of its group, so a trailing partial group at the
    end of the epoch still steps, with the same scale as a full one.
    """
    tc = config.train
    device = next(raw_model.parameters()).device
    model.train()
    n_batches = len(loader)
    full_groups_end = (n_batches // tc.accumulate) * tc.accumulate
    # Per-batch bookkeeping is kept to one tensor op (argmax): on a small CPU model each
    # extra op or wrapper call costs microseconds per batch, a few % of the epoch. Every
    # shortcut below computes exactly what the general form would (bit for bit).
    on_cpu = device.type == "cpu"
    scaling = scaler.is_enabled()
    no_sync_needed = contextlib.nullcontext()
    loss_sum_t = torch.zeros((), dtype=torch.float64, device=device)  # off-CPU: no syncs
    loss_sum = 0.0  # on CPU: float(loss) * n is the same double product as the tensor form
    predictions: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    count = 0
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(progress(loader, config, dist, f"epoch {epoch}/{tc.epochs}")):
        if not on_cpu:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        group_size = tc.accumulate if i < full_groups_end else n_batches - full_groups_end
        steps_now = (i + 1) % tc.accumulate == 0 or i + 1 == n_batches
        sync = no_sync_needed if steps_now or not dist.enabled else model.no_sync()  # type: ignore[operator]
        with sync:
            with autocast:
                logits = model(x)
            loss = criterion(logits.float(), y)
            scaled = loss if group_size == 1 else loss / group_size  # x / 1 == x exactly
            (scaler.scale(scaled) if scaling else scaled).backward()
        if steps_now:
            if tc.grad_clip > 0:
                if scaling:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(raw_model.parameters(), tc.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            if scaling:
                scaler.step(optimizer)
                scaler.update()
            else:  # what a disabled GradScaler does, without its wrappers
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.global_step += 1
            if ema_model is not None:
                update_ema(ema_model, raw_model, tc.ema_decay)
        if on_cpu:
            loss_sum += loss.item() * len(y)
        else:
            loss_sum_t += loss.detach().double() * len(y)
        predictions.append(logits.detach().argmax(dim=1))
        targets.append(y)
        count += len(y)
    correct = (torch.cat(predictions) == torch.cat(targets)).sum() if predictions else 0
    total_loss, total_correct, total = distributed.sum_across_ranks(
        dist, [loss_sum if on_cpu else float(loss_sum_t), float(correct), float(count)])
    if total == 0:
        return math.nan, math.nan, float(lr)
    return total_loss / total, total_correct / total, float(lr)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, criterion: nn.Module, class_names: list[str],
             prefix: str, device: torch.device, autocast: Any) -> dict[str, float]:
    """Loss and classification metrics of `model` over a whole split (every rank: all of it).

    The loss is computed once over the concatenated logits, so a class-weighted loss is
    the exact weighted mean over the split, not an average of batch means.
    """
    model.eval()
    logits_all, targets_all = [], []
    for x, y in loader:
        with autocast:
            logits = model(x.to(device, non_blocking=True))
        logits_all.append(logits.float())
        targets_all.append(y.to(device, non_blocking=True))
    if not logits_all:
        empty = classification_metrics(np.zeros((0, len(class_names))), np.zeros(0), class_names,
                                       prefix)
        return {f"{prefix}_loss": math.nan, **empty}
    logits, targets = torch.cat(logits_all), torch.cat(targets_all)
    loss = criterion(logits, targets).item()
    return {f"{prefix}_loss": float(loss),
            **classification_metrics(logits.cpu(), targets.cpu(), class_names, prefix)}


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * weights; buffers (BatchNorm stats) are copied."""
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.lerp_(p.detach(), 1.0 - decay)
    for ema_b, b in zip(ema_model.buffers(), model.buffers()):
        ema_b.copy_(b)


def cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up, then cosine decay to 0."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return multiplier


def train_loader_for(dataset: Dataset, config: Config, dist: distributed.DistInfo,
                     epoch: int) -> Any:
    """This rank's shard of the training split; the order is a function of (seed, epoch)."""
    tc = config.train
    return dataset.loader("train", tc.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                          core_dropout=tc.core_dropout, rank=dist.rank,
                          world_size=dist.world_size, num_workers=config.data.num_workers)


def progress(loader: Any, config: Config, dist: distributed.DistInfo, desc: str) -> Iterable[Any]:
    """tqdm on stderr, only for a person watching (a TTY), rank 0, and progress_bar: true."""
    if not (config.train.progress_bar and dist.is_main and sys.stderr.isatty()):
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


# =========================================================================== state


class TrainState:
    """What a resumed run must get back besides tensors: position, history, bests."""

    def __init__(self, epoch: int, global_step: int, history: list[dict[str, Any]],
                 best: dict[str, dict[str, Any]], es_best: float | None, bad_epochs: int) -> None:
        self.epoch = epoch
        self.global_step = global_step
        self.history = history
        self.best = best
        self.es_best = es_best
        self.bad_epochs = bad_epochs

    @classmethod
    def fresh(cls, config: Config) -> TrainState:
        return cls(0, 0, [], {}, None, 0)

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


def epoch_files(paths: RunPaths, ckpt: dict[str, Any], columns: list[str], config: Config,
                state: TrainState, newly_best: list[str],
                class_names: list[str]) -> list[tuple[Path, Any]]:
    """This epoch's files, one atomic batch (``write_files_atomically``), in write order:
    ``best_<metric>.pt`` for each metric that improved, ``last.pt``, the logs and
    ``training_results.json``.

    The checkpoint is serialized once; each best file written now is a hard link to this
    epoch's ``last.pt``, whose ``monitor`` names every metric it is the best for. Order
    matters for a kill between two renames: a resume restarts from last.pt and the logs
    are rewritten from its history, so the logs never run ahead of last.pt.
    """
    files: list[tuple[Path, Any]] = [(paths.best(metric), ckpt) for metric in newly_best]
    files.append((paths.last, ckpt))
    files += render_history(paths.root, columns, state.history)
    results = results_dict(config, state, class_names, status="running",
                           reason=f"training, epoch {state.epoch}/{config.train.epochs} done")
    files.append((paths.results, json_text(results).encode("utf-8")))
    return files


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


# =========================================================================== checks


def refuse_defaults(config: Config, config_path: str | Path | None, allow_defaults: bool) -> None:
    """The spec's story: a run that silently used the default config saved only one best."""
    if allow_defaults:
        return
    if config_path is None:
        raise TrainSetupError(
            "no --config given: refusing to train on built-in defaults (they track only "
            "val_loss); pass --config FILE, or --allow-defaults if you mean it")
    if config.uses_default_tracking():
        raise TrainSetupError(
            f"{config_path}: checkpoint.tracked is the default (only val_loss), so only "
            "best_val_loss.pt would be saved; list the metrics you need, or pass --allow-defaults")


def check_logged_names(config: Config, columns: list[str]) -> None:
    """Every tracked metric and the early-stopping monitor must be a logged column."""
    loggable = [c for c in columns if c not in ("epoch", "epoch_seconds")]
    named = [(f"checkpoint.tracked: metric '{t.metric}'", t.metric) for t in config.checkpoint.tracked]
    if config.train.early_stopping is not None:
        m = config.train.early_stopping.monitor
        named.append((f"train.early_stopping.monitor: '{m}'", m))
    for what, name in named:
        if name not in loggable:
            close = difflib.get_close_matches(name, loggable, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TrainSetupError(f"{what} is not a column the engine logs for dataset "
                                  f"'{config.data.name}'{hint} (logged: {', '.join(loggable)})")


def compute_class_weights(setting: Any, dataset: Dataset) -> list[float] | None:
    """`none` -> None; `balanced` -> n / (k * count_c) over the train split; a list as given."""
    k = len(dataset.class_names)
    if setting == "none":
        return None
    if setting == "balanced":
        counts = np.bincount(dataset.y[dataset.splits["train"]], minlength=k).astype(np.float64)
        counts = np.maximum(counts, 1.0)
        return [float(v) for v in counts.sum() / (k * counts)]
    weights = [float(w) for w in setting]
    if len(weights) != k:
        raise ConfigError(f"train.class_weights: {len(weights)} weights given but dataset "
                          f"'{dataset.name}' has {k} classes ({', '.join(dataset.class_names)})")
    return weights


def load_inflight_hook(config: Config, run_dir: Path) -> InflightHook | None:
    """The in-flight gates of ``gates.inflight`` (``pytest_mlgates.inflight.Gates``, the
    same class any training loop uses), if that file exists and the plugin is installed;
    otherwise a warning in train.log and no gates.  A broken gate file stops the launch."""
    gates_file = config.gates.inflight
    if not gates_file:
        return None
    if not Path(gates_file).is_file():
        log.warning("gates.inflight: %s not found; training without in-flight gates", gates_file)
        return None
    try:
        from pytest_mlgates.errors import MlgatesError
        from pytest_mlgates.inflight import Gates
    except ImportError as exc:
        log.warning("gates.inflight: in-flight gates unavailable (%s); training without them", exc)
        return None
    try:
        gates = Gates(gates_file, run_dir, after_epoch=config.gates.after_epoch)
    except MlgatesError as err:
        raise ConfigError(f"gates.inflight: {err}") from None

    def hook(_run_dir: Path, epoch: int) -> str | None:
        verdict = gates.check(epoch)
        return verdict.reason if verdict.red else None

    return hook


# =========================================================================== run files


class RunPaths:
    """Where each file of the run dir contract lives."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.final = self.checkpoints / "final.pt"
        self.results = run_dir / "training_results.json"
        self.provenance = run_dir / "provenance.json"
        self.plots = run_dir / "plots"

    def best(self, metric: str) -> Path:
        return self.checkpoints / f"best_{metric}.pt"


def previous_finished_results(paths: RunPaths) -> dict[str, Any] | None:
    """training_results.json of a run that already finished (and has final.pt), else None."""
    try:
        results = json.loads(paths.results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(results, dict) and results.get("status") in FINISHED_STATUSES \
            and paths.final.is_file():
        return results
    return None


def read_provenance(paths: RunPaths) -> dict[str, Any]:
    """provenance.json of an earlier start of this run dir ({} when there is none)."""
    try:
        previous = json.loads(paths.provenance.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def write_run_files(paths: RunPaths, config: Config, dataset: Dataset,
                    config_path: str | Path | None, argv: list[str] | None, allow_defaults: bool,
                    dist: distributed.DistInfo, previous: dict[str, Any], resumed_at: int | None,
                    tracking: dict[str, Any] | None) -> None:
    """config.yaml, splits.json and provenance.json (kept across resumes, with each resume,
    and the tracked runs the trackers continue on a resume)."""
    atomic_write_text(paths.root / "config.yaml", dump_yaml(config))
    write_json(paths.root / "splits.json", dataset.splits_json())
    if resumed_at is None:
        previous = {}
    now = runlog.utc_now()
    provenance = {
        "entry_point": runlog.entry_point(dist.world_size),
        "argv": list(argv) if argv is not None else list(sys.argv),
        "config_path": str(config_path) if config_path is not None else None,
        "config_sha256": file_sha256(config_path) if config_path is not None else None,
        "resolved_config_sha256": file_sha256(paths.root / "config.yaml"),
        "overrides": overrides_from_argv(argv),
        "git": runlog.git_state(),
        "versions": runlog.versions(),
        "device": dist.device,
        "world_size": dist.world_size,
        "seed": config.seed,
        "start_time": previous.get("start_time", now),
        "end_time": None,
        "allow_defaults": allow_defaults,
        "resumes": [*previous.get("resumes", []),
                    *([{"at_epoch": resumed_at, "time": now}] if resumed_at is not None else [])],
        "tracking": tracking,
    }
    write_json(paths.provenance, provenance)


def overrides_from_argv(argv: list[str] | None) -> list[str]:
    out, args = [], list(argv or [])
    for i, arg in enumerate(args):
        if arg == "--override" and i + 1 < len(args):
            out.append(args[i + 1])
        elif arg.startswith("--override="):
            out.append(arg.split("=", 1)[1])
    return out


def finish_provenance(paths: RunPaths) -> None:
    with contextlib.suppress(OSError, ValueError):
        provenance = json.loads(paths.provenance.read_text(encoding="utf-8"))
        provenance["end_time"] = runlog.utc_now()
        write_json(paths.provenance, provenance)


def write_results(paths: RunPaths, config: Config, state: TrainState, class_names: list[str], *,
                  status: str, reason: str, test: dict[str, float] | None = None) -> dict[str, Any]:
    results = results_dict(config, state, class_names, status=status, reason=reason, test=test)
    write_json(paths.results, results)
    return results


def results_dict(config: Config, state: TrainState, class_names: list[str], *, status: str,
                 reason: str, test: dict[str, float] | None = None) -> dict[str, Any]:
    """The content of training_results.json (docs/internals.md)."""
    es = config.train.early_stopping
    results = {
        "status": status,
        "reason": reason,
        "epochs_completed": state.epoch,
        "epochs_planned": config.train.epochs,
        "monitor": {"metric": es.monitor, "mode": es.mode} if es is not None else None,
        "best": {m: {**b, "checkpoint": f"checkpoints/best_{m}.pt"} for m, b in state.best.items()},
        "final": dict(state.history[-1]) if state.history else None,
        "test": test,
        "class_names": class_names,
    }
    return results


PLOT_FILES = ("loss_curve.png", "recall_curve.png")


def missing_plots(paths: RunPaths) -> list[str]:
    """The plots a finished run lacks: a kill while the plot child drew them loses them,
    and the finished run is not trained again, so the next command must draw them."""
    return [name for name in PLOT_FILES if not (paths.plots / name).is_file()]


def draw_plots(paths: RunPaths, history: list[dict[str, Any]], class_names: list[str]) -> None:
    """plots/*.png, drawn by ``python -m model.plots`` in a child process (see plots.py)."""
    import subprocess

    if not history:
        return
    try:
        proc = subprocess.run([sys.executable, "-m", "model.plots", str(paths.root)],
                              capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not draw plots: %s: %s", exc.__class__.__name__, exc)
        return
    if proc.returncode != 0:  # a plot must never cost a finished run its results
        log.warning("could not draw plots: %s", " ".join(proc.stderr.split())[-300:])


def format_epoch_line(row: dict[str, Any], epochs: int, newly_best: list[str]) -> str:
    best = f"  new best: {', '.join(newly_best)}" if newly_best else ""
    return (f"epoch {row['epoch']}/{epochs}  train_loss={row['train_loss']:.4f}  "
            f"val_loss={row['val_loss']:.4f}  val_accuracy={row['val_accuracy']:.4f}  "
            f"val_macro_f1={row['val_macro_f1']:.4f}  val_min_recall={row['val_min_recall']:.4f}  "
            f"lr={row['lr']:.3g}  ({row['epoch_seconds']:.2f}s){best}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = [
    "RunDirError",
    "TrainSetupError",
    "evaluate",
    "save_checkpoint",
    "train",
    "train_one_epoch",
]
