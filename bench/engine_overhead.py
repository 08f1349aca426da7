"""What the engine costs over a bare hand-written loop, measured in one run.

Same model, data, data order, initial weights, batch size, optimizer and lr schedule; the
bare loop is the textbook one (forward, loss, backward, step, zero_grad, scheduler step,
then a validation pass that computes what any loop logging val loss and accuracy does:
the val loss, accuracy and per-class recall, as a few torch ops on the val logits -- not
the engine's F1/AUROC, and no checkpoint or log file). The engine is measured as users
run it: its epoch includes its metrics, the best/last checkpoints (serialized on the
training thread; atomic, fsync'd writes on its writer thread), the CSV/JSON logs and
train.log.

**Lock-step.** Whole runs on this shared 2-core machine drift by 20% from one minute to
the next, far more than the 5% being measured. So the two loops run at the same time in
two processes (peak memory, ``ru_maxrss``, is each one's own) and take turns, one epoch
each: engine epoch 2, bare epoch 2, engine epoch 3, ... -- while one trains, the other
waits on a pipe. Each pair of epochs sees the same machine, and the time ratio is the
median over all pairs of (engine epoch / bare epoch); the first epoch is warm-up and
dropped. The engine's epoch runs from the moment it is let go until it logs the epoch's
line (its files are handed to the writer just before that line).

The writer thread does one epoch's writes while the next epoch trains (as in any run).
To keep that true in lock-step -- the writes must overlap the engine's own next epoch,
not the bare loop's turn -- the bench holds the writer back while the engine waits; its
work is timed and printed too, with the ratio it would give if it did not overlap at
all (an upper bound).

The final train losses must agree to 5 decimals -- the self-check PyTorch Lightning's
parity benchmark uses against plain PyTorch -- or the script exits 1.

    python bench/engine_overhead.py [--epochs 12] [--repeats 4] [--override model.width=128]

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
import threading
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


# --------------------------------------------------------------------------- the baton


class Baton:
    """A child's side of the lock-step: report an epoch's end, wait to be let go again.

    Protocol on the child's stdin/stdout, one line each: the child writes ``ready`` or
    ``done``; the parent answers ``go``. Times are the child's own ``perf_counter``.
    """

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.resumes: list[float] = []
        self.cpu_ends: list[float] = []
        self.cpu_resumes: list[float] = []
        self.resumed = threading.Condition()
        self.n_resumed = 0

    def _wait_go(self) -> None:
        line = sys.stdin.readline()
        if line.strip() != "go":
            raise SystemExit(f"baton: expected 'go' from the parent, got {line!r}")
        self.resumes.append(time.perf_counter())
        self.cpu_resumes.append(time.process_time())
        with self.resumed:
            self.n_resumed += 1
            self.resumed.notify_all()

    def start(self) -> None:
        self._say("ready")
        self._wait_go()

    def epoch_done(self) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self._say("done")
        self._wait_go()

    def wait_resumed(self, n: int) -> None:
        with self.resumed:
            self.resumed.wait_for(lambda: self.n_resumed >= n)

    @staticmethod
    def _say(word: str) -> None:
        sys.__stdout__.write(word + "\n")
        sys.__stdout__.flush()

    def epoch_times(self) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds of each epoch, from its go to its done."""
        return ([e - r for r, e in zip(self.resumes, self.ends)],
                [e - r for r, e in zip(self.cpu_resumes, self.cpu_ends)])


# --------------------------------------------------------------------------- engine child


def run_engine(epochs: int) -> dict:
    import logging

    import model.checkpoint as checkpoint_module
    from model.config import load_config
    from model.train import train

    config = load_config(CONFIG, bench_overrides(epochs))
    baton = Baton()
    writer_busy: list[float] = []
    write_files = checkpoint_module.write_files_atomically
    batches = iter(range(1, 10**9))

    def held_back_writes(files: Any) -> None:
        # the writer thread's k-th batch is epoch k's files: write them while epoch k+1
        # trains, as in a run, not while the bare loop has its turn
        if threading.current_thread().name == "model-writer" and not os.environ.get("BENCH_NOHOLD"):
            baton.wait_resumed(next(batches) + 1)
        started = time.perf_counter()
        write_files(files)
        writer_busy.append(time.perf_counter() - started)

    checkpoint_module.write_files_atomically = held_back_writes

    class EpochBaton(logging.Handler):  # the engine logs "epoch N/M ..." once an epoch is done
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("epoch "):
                baton.epoch_done()

    logging.getLogger("model").addHandler(EpochBaton())
    with tempfile.TemporaryDirectory() as tmp:
        baton.start()
        results = train(config, Path(tmp) / "run", fresh=True, config_path=str(CONFIG),
                        allow_defaults=True)
        log_rows = json.loads((Path(tmp) / "run" / "metric_history.json").read_text())["rows"]
    wall, cpu = baton.epoch_times()
    return {"epoch_times": wall, "epoch_cpu": cpu,
            "compute_times": [float(r["epoch_seconds"]) for r in log_rows],
            "writer_busy": writer_busy[-epochs:],
            "final_train_loss": results["final"]["train_loss"], "peak_rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------- bare child


def run_bare(epochs: int) -> dict:
    import math
    import random

    import numpy as np
    import torch
    from torch import nn

    from model.config import load_config
    from model.data import build_dataset
    from model.nets import build_model

    config = load_config(CONFIG, bench_overrides(epochs))
    tc = config.train
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    data = build_dataset(config)
    model = build_model(config.model, data.input_shape, len(data.class_names))
    criterion = nn.CrossEntropyLoss()
    n_classes = len(data.class_names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    val_loader = data.loader("val", tc.batch_size, shuffle=False, seed=config.seed, epoch=0)
    steps = len(data.loader("train", tc.batch_size, shuffle=True, seed=config.seed, epoch=1))
    total = steps * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / total))))

    baton = Baton()
    baton.start()
    train_loss = math.nan
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum, count = 0.0, 0
        for x, y in data.loader("train", tc.batch_size, shuffle=True, seed=config.seed, epoch=epoch):
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            loss_sum += loss.item() * len(y)
            count += len(y)
        train_loss = loss_sum / count
        model.eval()
        with torch.no_grad():  # what any loop that logs val loss and accuracy computes
            pairs = [(model(x), y) for x, y in val_loader]
            logits, targets = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
            val_loss = criterion(logits, targets).item()
            hits = logits.argmax(dim=1) == targets
            val_accuracy = hits.double().mean().item()
            per_class = torch.bincount(targets[hits], minlength=n_classes).double() \
                / torch.bincount(targets, minlength=n_classes).clamp(min=1).double()
            val_recall = per_class.tolist()
        del val_loss, val_accuracy, val_recall
        baton.epoch_done()
    wall, cpu = baton.epoch_times()
    return {"epoch_times": wall, "epoch_cpu": cpu, "final_train_loss": train_loss,
            "peak_rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------- parent


class Child:
    def __init__(self, kind: str, epochs: int, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
        extra = [a for o in EXTRA_OVERRIDES for a in ("--override", o)]
        self.kind = kind
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", kind, "--epochs", str(epochs), *extra],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, env=env)

    def expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.fail(f"said {line!r}, expected {word!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        if self.proc.wait() != 0:
            self.fail(f"exited {self.proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])

    def fail(self, why: str) -> None:
        self.proc.kill()
        self.stderr.seek(0)
        raise SystemExit(f"{self.kind} child {why}: {self.stderr.read().strip()[-2000:]}")


def lockstep(epochs: int, threads: int, engine_first: bool) -> tuple[dict, dict]:
    """One engine run and one bare run, taking turns epoch by epoch."""
    engine, bare = Child("engine", epochs, threads), Child("bare", epochs, threads)
    engine.expect("ready")
    bare.expect("ready")  # both set up (imports, data) before either trains
    order = [engine, bare] if engine_first else [bare, engine]
    for _ in range(epochs):
        for child in order:
            child.go()
            child.expect("done")
    for child in order:
        child.go()  # let both finish (the engine's last files, final.pt, plots)
    return engine.result(), bare.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=4,
                        help="lock-step runs; (epochs - 1) epoch pairs each")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per side (1: the other core is the writer's)")
    parser.add_argument("--override", action="append", default=[],
                        help="config override for both sides, e.g. model.width=128")
    parser.add_argument("--child", choices=["engine", "bare"])
    args = parser.parse_args()
    EXTRA_OVERRIDES.extend(args.override)
    if args.child:
        out = run_engine(args.epochs) if args.child == "engine" else run_bare(args.epochs)
        print(json.dumps(out))
        return 0

    pair_ratios, cpu_ratios, upper_ratios = [], [], []
    engine_epochs, bare_epochs, writer_busy, compute = [], [], [], []
    engine_mem, bare_mem, losses = 0.0, 0.0, []
    for i in range(args.repeats):  # who goes first in each pair alternates between runs
        eng, bare = lockstep(args.epochs, args.threads, engine_first=i % 2 == 0)
        # epoch 1 is warm-up; the writer's batch k overlaps epoch k+1
        for k in range(1, args.epochs):
            e, b = eng["epoch_times"][k], bare["epoch_times"][k]
            pair_ratios.append(e / b)
            cpu_ratios.append(eng["epoch_cpu"][k] / bare["epoch_cpu"][k])
            upper_ratios.append((e + eng["writer_busy"][k - 1]) / b)
            engine_epochs.append(e)
            bare_epochs.append(b)
            writer_busy.append(eng["writer_busy"][k - 1])
            compute.append(eng["compute_times"][k])
        engine_mem, bare_mem = max(engine_mem, eng["peak_rss_mib"]), max(bare_mem, bare["peak_rss_mib"])
        losses.append((eng["final_train_loss"], bare["final_train_loss"]))

    time_ratio, mem_ratio = statistics.median(pair_ratios), engine_mem / bare_mem
    q1, _, q3 = statistics.quantiles(pair_ratios, n=4)
    engine_loss, bare_loss = losses[0]
    losses_agree = all(round(a, 5) == round(b, 5) for a, b in losses)
    engine_epoch, bare_epoch = statistics.median(engine_epochs), statistics.median(bare_epochs)

    print(f"engine overhead on {CONFIG.relative_to(REPO_ROOT)} {' '.join(args.override)} "
          f"({args.epochs} epochs, {args.repeats} lock-step runs, {args.threads} torch "
          f"thread(s) per side, first epoch dropped)")
    print("    (bare: train pass + val loss, accuracy and per-class recall; no checkpoints, "
          "no files)")
    print(f"  epoch time   engine {engine_epoch * 1000:8.1f} ms   bare {bare_epoch * 1000:8.1f} ms"
          f"   ratio {time_ratio:.3f}  (goal <= 1.05) {'OK' if time_ratio <= 1.05 else 'MISSED'}")
    print(f"    ratio = median over {len(pair_ratios)} epoch pairs taken in turn; quartiles "
          f"{q1:.3f} .. {q3:.3f}; sum of engine epochs / sum of bare epochs "
          f"{sum(engine_epochs) / sum(bare_epochs):.3f}")
    print(f"  CPU time per epoch (all threads: the writer's share counts): ratio "
          f"{statistics.median(cpu_ratios):.3f}")
    print(f"    engine breakdown (medians): train+eval {statistics.median(compute) * 1000:.1f} ms, "
          f"metrics, checkpoint serialization and log rows {(engine_epoch - statistics.median(compute)) * 1000:.1f} ms; "
          f"writer thread {statistics.median(writer_busy) * 1000:.1f} ms (fsync'd writes, "
          f"overlapping the next epoch)")
    print(f"    if the writes did not overlap training at all: ratio "
          f"{statistics.median(upper_ratios):.3f} (upper bound)")
    print(f"  peak memory  engine {engine_mem:8.1f} MiB  bare {bare_mem:8.1f} MiB  "
          f"ratio {mem_ratio:.3f}  (goal <= 1.05) {'OK' if mem_ratio <= 1.05 else 'MISSED'}")
    print("    (the plots are drawn once at the end by a child process, python -m model.plots)")
    print(f"  final train loss  engine {engine_loss:.8f}  bare {bare_loss:.8f}  "
          f"{'agree to 5 decimals' if losses_agree else 'DISAGREE'} ({len(losses)} runs)")
    return 0 if losses_agree else 1


if __name__ == "__main__":
    sys.exit(main())
