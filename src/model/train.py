"""The whole story of a training run, top to bottom: :func:`train`.

Read it like nanoGPT's ``train.py`` or the PyTorch ImageNet example: set up, resume if
there is something to resume, loop over epochs (:func:`train_one_epoch`,
:func:`evaluate`, the checkpoint and logs, handed to a writer thread), then finish (final
checkpoint, test split, plots). With ``tracking:`` in the config, MLflow or W&B get the
params, each epoch's metrics and the end status too (:mod:`model.tracking`).
There is no trainer class and no callback framework; the helpers are plain functions with
the names you would guess, below ``train`` or where their subject lives: :mod:`model.checks`
(the refusals), :mod:`model.runfiles` (the run-dir files), :mod:`model.trainstate` (what a
resume restores), :mod:`model.data` (each epoch's loader), :mod:`model.nets` (the EMA).

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
import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import checks, distributed, runfiles, runlog
from model.checkpoint import (
    BackgroundWriter,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng,
    save_checkpoint,
    seed_everything,
)
from model.config import Config
from model.data import build_dataset, train_loader_for
from model.metrics import classification_metrics
from model.nets import build_model, update_ema
from model.runlog import RunDirError, format_epoch_line, log_columns, progress, write_history
from model.tracking import Trackers, check_installed, open_trackers
from model.trainstate import TrainState, make_checkpoint, resume_from

log = logging.getLogger(runlog.LOGGER_NAME)


# =========================================================================== the story


def train(
    config: Config,
    run_dir: str | Path,
    *,
    fresh: bool = False,
    config_path: str | Path | None = None,
    argv: list[str] | None = None,
    allow_defaults: bool = False,
    inflight_hook: checks.InflightHook | None = None,
) -> dict[str, Any]:
    """Train `config` into `run_dir` (resuming from its ``last.pt`` unless `fresh`).

    Returns the content of ``training_results.json``. Raises ``TrainSetupError``,
    ``ConfigError``, ``RunDirError`` or ``CheckpointError`` (one line each) before
    training for a run that cannot start; any other exception during training is
    recorded as status ``failed`` and re-raised.
    """
    run_dir = Path(run_dir)
    checks.refuse_defaults(config, config_path, allow_defaults)

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
           inflight_hook: checks.InflightHook | None) -> dict[str, Any]:
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
    checks.check_logged_names(config, columns)
    class_weights = checks.compute_class_weights(tc.class_weights, dataset)

    # ---- 3. run dir and logging (rank 0 writes; the others only read)
    if dist.is_main:
        runlog.prepare_run_dir(run_dir, fresh=fresh)
        remove_stale_temp_files(run_dir / "checkpoints")
        remove_stale_temp_files(run_dir)
        remove_stale_temp_files(run_dir / "plots")  # a plot child killed mid-write
    distributed.barrier(dist)
    runlog.setup_logging(run_dir if dist.is_main else None, verbose=dist.is_main)
    paths = runfiles.RunPaths(run_dir)

    finished = runfiles.previous_finished_results(paths) if not fresh else None
    if finished is not None:
        missing = runfiles.missing_plots(paths) if dist.is_main and finished.get("final") else []
        if missing:  # the run was killed while its plot child drew them
            log.info("drawing the plots the stopped run did not finish: %s", ", ".join(missing))
            runfiles.draw_plots(paths, [finished["final"]], class_names)
        log.info("run in %s already finished (status %s); nothing to do (use --fresh to retrain)",
                 run_dir, finished["status"])
        finished["already_finished"] = True
        return finished

    if inflight_hook is None:
        inflight_hook = checks.load_inflight_hook(config, run_dir)

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
        previous = runfiles.read_provenance(paths) if not fresh else {}
        rng_before = capture_rng()  # importing mlflow or wandb must not shift a bit-exact resume
        trackers = open_trackers(config, run_dir, previous.get("tracking"))
        runfiles.write_run_files(paths, config, dataset, config_path, argv, allow_defaults, dist,
                                 previous, resumed_at=state.epoch if state.epoch else None,
                                 tracking=trackers.ids())
        write_history(run_dir, columns, state.history)
        runfiles.write_results(paths, config, state, class_names, status="running",
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
                writer.submit(runfiles.epoch_files(paths, ckpt, columns, config, state,
                                                   newly_best, class_names),
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
            results = runfiles.write_results(paths, config, state, class_names, status=status,
                                             reason=reason, test=test)
            runfiles.finish_provenance(paths)
            runfiles.draw_plots(paths, state.history, class_names)
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
                runfiles.write_results(paths, config, state, class_names, status="failed",
                                       reason=reason)
                runfiles.finish_provenance(paths)
                runfiles.draw_plots(paths, state.history, class_names)
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


def cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up, then cosine decay to 0."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return multiplier


__all__ = [
    "RunDirError",
    "evaluate",
    "save_checkpoint",
    "train",
    "train_one_epoch",
]
