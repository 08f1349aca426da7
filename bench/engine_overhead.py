"""What the engine costs over a bare hand-written loop, measured in one run.

Same model, data, data order, initial weights, batch size, optimizer and lr schedule; the
bare loop is the textbook one (forward, loss, backward, step, zero_grad, scheduler step,
then a validation pass that computes what any loop logging val loss and accuracy does:
the val loss, accuracy and per-class recall, as a few torch ops on the val logits -- not
the engine's F1/AUROC, and no checkpoint or log file). The engine is measured as users
run it: its epoch includes its metrics, handing the epoch's checkpoint and log rows to
its writer process (src/model/writer.py: the training thread pickles the dict and pipes
the tensor bytes; the writer serializes and does the atomic, fsync'd writes), and
train.log.

**Interleaved, in one process.** On this shared 2-core VM whole runs drift by 20% from
one minute to the next, and a process's speed also depends on where its memory landed
and which CPU it got: the same loop in two processes differs by up to 10% for their whole
lives. Either is larger than the 5% being measured. So the time is measured with both
loops in one process, taking turns one epoch each: the engine's ``train()`` runs, and
each time it logs an epoch's line the bare loop trains one epoch of its own model before
the engine goes on. Each pair of epochs sees the same machine, CPU and allocator. The
time ratio is the median over ``--repeats`` runs (fresh processes) of each run's median
(engine epoch / bare epoch); the first epoch is warm-up and dropped. The engine's epoch
runs from the end of the bare loop's turn to its next epoch line; the bare loop's RNG use
cannot leak into the engine's (the engine restores every RNG stream after each epoch
line, so both still train the exact runs they would alone).

The writer works on one epoch's files while the next epoch trains (as in any run). To
keep that true here -- its work must overlap the engine's own next epoch, not the bare
loop's turn -- the bench hands the epoch's job to the writer only after the bare loop's
turn; the hand-over's own cost is then counted in the engine's next epoch. The writer
process's CPU time is printed too, and counted in the CPU ratio.

**What the files cost.** Each repeat also runs the same pair with the engine's per-epoch
files switched off (a diagnostic the engine has no switch for: the bench swaps its writer
for one that keeps the job and writes nothing). The difference between the two ratios,
paired run by run, is what the durable per-epoch checkpoint and logs cost -- the
hand-over on the training thread and the writer's work beside it; the rest of the
overhead is the engine's metrics, RNG state and bookkeeping.

**Peak memory** needs each loop alone: one engine-only and one bare-only process
(``ru_maxrss``), and the engine's figure adds its writer process's peak (``VmHWM``).

The final train losses must agree to 5 decimals -- the self-check PyTorch Lightning's
parity benchmark uses against plain PyTorch -- or the script exits 1.

    python bench/engine_overhead.py [--epochs 12] [--repeats 12] [--override model.width=128]

Goals: time ratio <= 1.05, memory ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "default.yaml"


EXTRA_OVERRIDES: list[str] = []  # --override KEY=VALUE, passed to both sides


def bench_overrides(epochs: int) -> list[str]:
    # parity settings: features the bare loop does not have are off (EMA, class weights,
    # warm-up, early stopping, in-flight gates); the cosine schedule is replicated below
    return [f"train.epochs={epochs}", "train.ema_decay=0.0", "train.class_weights=none",
            "train.warmup_epochs=0", "train.early_stopping=null", "train.progress_bar=false",
            "gates.inflight=null", *EXTRA_OVERRIDES]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------- the bare loop


class BareLoop:
    """The textbook loop, one epoch per call, seeded and built as the engine builds its run."""

    def __init__(self, epochs: int) -> None:
        import math
        import random

        import numpy as np
        import torch
        from torch import nn

        from model.config import load_config
        from model.data import build_dataset
        from model.nets import build_model

        self.torch = torch
        config = load_config(CONFIG, bench_overrides(epochs))
        self.config, self.tc = config, config.train
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.data = build_dataset(config)
        self.model = build_model(config.model, self.data.input_shape, len(self.data.class_names))
        self.criterion = nn.CrossEntropyLoss()
        self.n_classes = len(self.data.class_names)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.tc.lr,
                                           weight_decay=self.tc.weight_decay)
        self.val_loader = self.data.loader("val", self.tc.batch_size, shuffle=False,
                                           seed=config.seed, epoch=0)
        steps = len(self.data.loader("train", self.tc.batch_size, shuffle=True,
                                     seed=config.seed, epoch=1))
        total = steps * epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / total))))
        self.train_loss = math.nan

    def epoch(self, epoch: int) -> None:
        torch, tc, model, criterion = self.torch, self.tc, self.model, self.criterion
        model.train()
        loss_sum, count = 0.0, 0
        for x, y in self.data.loader("train", tc.batch_size, shuffle=True, seed=self.config.seed,
                                     epoch=epoch):
            loss = criterion(model(x), y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            loss_sum += loss.item() * len(y)
            count += len(y)
        self.train_loss = loss_sum / count
        model.eval()
        with torch.no_grad():  # what any loop that logs val loss and accuracy computes
            pairs = [(model(x), y) for x, y in self.val_loader]
            logits, targets = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
            val_loss = criterion(logits, targets).item()
            hits = logits.argmax(dim=1) == targets
            val_accuracy = hits.double().mean().item()
            per_class = torch.bincount(targets[hits], minlength=self.n_classes).double() \
                / torch.bincount(targets, minlength=self.n_classes).clamp(min=1).double()
            val_recall = per_class.tolist()
        del val_loss, val_accuracy, val_recall


# --------------------------------------------------------------------------- children


class NoFiles:
    """A writer that writes nothing (the floor diagnostic): it keeps the last job's log
    files, so the run's epoch_seconds can still be read back."""

    cpu_seconds = None
    peak_rss_kib = None

    def __init__(self) -> None:
        self.files: list[tuple[Any, bytes]] = []

    def submit(self, ckpt: Any, pt_paths: Any, files: Any) -> None:
        self.files = list(files)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_engine(epochs: int, bare: BareLoop | None, *, files: bool = True) -> dict:
    """The engine's run; with `bare`, the bare loop takes its turn after each epoch line;
    without `files`, nothing is written per epoch (the floor diagnostic)."""
    import logging

    import model.writer as writer_module
    from model.config import load_config
    from model.train import train

    config = load_config(CONFIG, bench_overrides(epochs))
    marks: list[tuple[float, float, float, float]] = []  # engine done, bare done; wall, CPU
    deferred: list[tuple[Any, ...]] = []
    writers: list[Any] = []
    real_open, real_submit = writer_module.open_writer, {}

    def open_writer() -> Any:
        writer = real_open() if files else NoFiles()
        writers.append(writer)
        real_submit["submit"] = writer.submit
        if bare is not None:  # hand the epoch's job over after the bare loop's turn
            writer.submit = lambda *args: deferred.append(args)
        return writer

    writer_module.open_writer = open_writer
    import model.train as train_module
    train_module.open_writer = open_writer

    class Turns(logging.Handler):  # the engine logs "epoch N/M ..." once an epoch is done
        def emit(self, record: logging.LogRecord) -> None:
            if not record.getMessage().startswith("epoch "):
                return
            engine_done, engine_cpu = time.perf_counter(), time.process_time()
            if bare is not None:
                bare.epoch(len(marks) + 1)
            marks.append((engine_done, engine_cpu, time.perf_counter(), time.process_time()))
            # the job this epoch submitted: its cost lands in the engine's next epoch, and
            # its serialization and writes overlap that epoch, as they would in any run
            while deferred:
                real_submit["submit"](*deferred.pop(0))

    logging.getLogger("model").addHandler(Turns())
    with tempfile.TemporaryDirectory() as tmp:
        started = (time.perf_counter(), time.process_time())
        results = train(config, Path(tmp) / "run", fresh=True, config_path=str(CONFIG),
                        allow_defaults=True)
        writer = writers[0]
        history = (Path(tmp) / "run" / "metric_history.json").read_bytes() if files else \
            {Path(p).name: data for p, data in writer.files}["metric_history.json"]
        log_rows = json.loads(history)["rows"]
    resumes = [started] + [(m[2], m[3]) for m in marks[:-1]]
    return {"engine_epochs": [m[0] - r[0] for m, r in zip(marks, resumes)],
            "engine_cpu": [m[1] - r[1] for m, r in zip(marks, resumes)],
            "bare_epochs": [m[2] - m[0] for m in marks],
            "bare_cpu": [m[3] - m[1] for m in marks],
            "compute_times": [float(r["epoch_seconds"]) for r in log_rows],
            "writer": type(writer).__name__,
            "writer_cpu_s": getattr(writer, "cpu_seconds", None),
            "writer_peak_rss_mib": (writer.peak_rss_kib / 1024.0
                                    if getattr(writer, "peak_rss_kib", None) else 0.0),
            "final_train_loss": results["final"]["train_loss"],
            "bare_final_train_loss": bare.train_loss if bare is not None else None,
            "peak_rss_mib": peak_rss_mib()}


def run_child(kind: str, epochs: int) -> dict:
    if kind == "interleaved":
        return run_engine(epochs, BareLoop(epochs))
    if kind == "interleaved-nofiles":
        return run_engine(epochs, BareLoop(epochs), files=False)
    if kind == "engine":
        return run_engine(epochs, None)
    bare = BareLoop(epochs)
    for epoch in range(1, epochs + 1):
        bare.epoch(epoch)
    return {"final_train_loss": bare.train_loss, "peak_rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------- parent


def child(kind: str, epochs: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    extra = [a for o in EXTRA_OVERRIDES for a in ("--override", o)]
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--epochs", str(epochs), *extra],
                          cwd=REPO_ROOT, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=12,
                        help="interleaved runs, each a fresh process; (epochs - 1) epoch pairs each")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the other core is the writer's)")
    parser.add_argument("--override", action="append", default=[],
                        help="config override for both loops, e.g. model.width=128")
    parser.add_argument("--verbose", action="store_true", help="print each run's ratio")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the runs with the per-epoch files off (half the time)")
    parser.add_argument("--child", choices=["interleaved", "interleaved-nofiles", "engine", "bare"])
    args = parser.parse_args()
    EXTRA_OVERRIDES.extend(args.override)
    if args.child:
        print(json.dumps(run_child(args.child, args.epochs)))
        return 0

    run_ratios, pair_ratios, cpu_ratios, compute_ratios = [], [], [], []
    engine_epochs, bare_epochs, compute, losses, writer_cpu = [], [], [], [], []
    floor_ratios: list[float] = []
    writer_kind = "?"
    for i in range(args.repeats):
        got = child("interleaved", args.epochs, args.threads)
        writer_kind = got["writer"]
        # the writer process's CPU time (it has its own core and GIL), spread over the epochs
        per_epoch_writer = (got["writer_cpu_s"] or 0.0) / args.epochs
        writer_cpu.append(per_epoch_writer)
        ratios = []
        for k in range(1, args.epochs):  # epoch 1 is warm-up
            e, b = got["engine_epochs"][k], got["bare_epochs"][k]
            ratios.append(e / b)
            cpu_ratios.append((got["engine_cpu"][k] + per_epoch_writer) / got["bare_cpu"][k])
            engine_epochs.append(e)
            bare_epochs.append(b)
            compute.append(got["compute_times"][k])
            compute_ratios.append(got["compute_times"][k] / b)
        pair_ratios += ratios
        run_ratios.append(statistics.median(ratios))
        losses.append((got["final_train_loss"], got["bare_final_train_loss"]))
        if not args.no_floor:
            floor = child("interleaved-nofiles", args.epochs, args.threads)
            floor_ratios.append(statistics.median(
                floor["engine_epochs"][k] / floor["bare_epochs"][k] for k in range(1, args.epochs)))
            losses.append((floor["final_train_loss"], floor["bare_final_train_loss"]))
        if args.verbose:
            print(f"  run {i + 1}: median pair ratio {run_ratios[-1]:.3f}"
                  + (f", files off {floor_ratios[-1]:.3f}" if floor_ratios else ""), flush=True)
    alone = {kind: child(kind, args.epochs, args.threads) for kind in ("engine", "bare")}
    losses.append((alone["engine"]["final_train_loss"], alone["bare"]["final_train_loss"]))

    time_ratio = statistics.median(run_ratios)
    engine_mem = alone["engine"]["peak_rss_mib"] + alone["engine"]["writer_peak_rss_mib"]
    bare_mem = alone["bare"]["peak_rss_mib"]
    mem_ratio = engine_mem / bare_mem
    q1, _, q3 = statistics.quantiles(run_ratios, n=4) if len(run_ratios) > 1 else [time_ratio] * 3
    engine_loss, bare_loss = losses[-1]
    losses_agree = all(round(a, 5) == round(b, 5) for a, b in losses)
    engine_epoch, bare_epoch = statistics.median(engine_epochs), statistics.median(bare_epochs)

    print(f"engine overhead on {CONFIG.relative_to(REPO_ROOT)} {' '.join(args.override)} "
          f"({args.epochs} epochs, {args.repeats} interleaved runs, {args.threads} torch "
          f"thread(s), first epoch dropped; writer: {writer_kind})")
    print("    (bare: train pass + val loss, accuracy and per-class recall; no checkpoints, "
          "no files)")
    print(f"  epoch time   engine {engine_epoch * 1000:8.1f} ms   bare {bare_epoch * 1000:8.1f} ms"
          f"   ratio {time_ratio:.3f}  (goal <= 1.05) {'OK' if time_ratio <= 1.05 else 'MISSED'}")
    print(f"    ratio = median over {len(run_ratios)} runs of each run's median over its "
          f"{args.epochs - 1} epoch pairs; runs' quartiles {q1:.3f} .. {q3:.3f}, range "
          f"{min(run_ratios):.3f} .. {max(run_ratios):.3f}")
    print(f"    all {len(pair_ratios)} pairs pooled: median {statistics.median(pair_ratios):.3f}; "
          f"sum of engine epochs / sum of bare epochs {sum(engine_epochs) / sum(bare_epochs):.3f}")
    fixed = statistics.median(e - b for e, b in zip(engine_epochs, bare_epochs))
    print(f"    the engine's cost per epoch: {fixed * 1000:.1f} ms (median of engine - bare "
          f"over the pairs), {fixed / bare_epoch:.1%} of this bare epoch")
    if floor_ratios:
        paired = [r - f for r, f in zip(run_ratios, floor_ratios)]
        print(f"  with the per-epoch files off (diagnostic): ratio "
              f"{statistics.median(floor_ratios):.3f}; the durable checkpoint and logs of each "
              f"epoch cost {statistics.median(paired):+.3f} of it (median of the {len(paired)} "
              f"runs' paired differences)")
    print(f"  CPU time per epoch (every thread, and the writer process's): ratio "
          f"{statistics.median(cpu_ratios):.3f}")
    print(f"    engine breakdown (medians): train+eval {statistics.median(compute) * 1000:.1f} ms, "
          f"then the checkpoint hand-over and the log rows "
          f"{(engine_epoch - statistics.median(compute)) * 1000:.1f} ms; writer process "
          f"{statistics.median(writer_cpu) * 1000:.1f} ms CPU per epoch (its start-up included; "
          f"serialize, fsync'd writes, overlapping the next epoch)")
    print(f"    the engine's train+eval alone over the bare epoch: {statistics.median(compute_ratios):.3f}"
          f" (pooled median; its train loop, its val metrics, and the writer's overlap)")
    print(f"  peak memory  engine {engine_mem:8.1f} MiB  bare {bare_mem:8.1f} MiB  "
          f"ratio {mem_ratio:.3f}  (goal <= 1.05) {'OK' if mem_ratio <= 1.05 else 'MISSED'}")
    print(f"    (each loop alone in its own process; the engine's figure is its process's peak "
          f"{alone['engine']['peak_rss_mib']:.1f} MiB plus its writer process's peak "
          f"{alone['engine']['writer_peak_rss_mib']:.1f} MiB; the plots are drawn once at the "
          f"end by a child process, python -m model.plots)")
    print(f"  final train loss  engine {engine_loss:.8f}  bare {bare_loss:.8f}  "
          f"{'agree to 5 decimals' if losses_agree else 'DISAGREE'} ({len(losses)} runs)")
    return 0 if losses_agree else 1


if __name__ == "__main__":
    sys.exit(main())
