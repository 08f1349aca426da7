"""What the engine costs over a bare hand-written loop, measured in one run.

Same model, data, data order, initial weights, batch size, optimizer and lr schedule; the
bare loop is the textbook one (forward, loss, backward, step, zero_grad, scheduler step,
then a validation pass that computes what any loop logging val loss and accuracy does:
the val loss, accuracy and per-class recall, as a few torch ops on the val logits -- not
the engine's F1/AUROC, and no checkpoint or log file). The engine is measured as users run it: its epoch time
includes metrics, the best/last checkpoints (atomic, fsync'd), the CSV/JSON logs and
train.log -- everything between the end of one epoch and the end of the next (timed with
the in-flight hook, which the engine calls after each epoch's files are written).

Each side runs in its own subprocess (so peak memory, ``ru_maxrss``, is not shared), the
pair is repeated ``--repeats`` times alternately (who goes first alternates too), and the
first epoch of every run is dropped as warm-up. The time ratio is the median over pairs of
(engine median epoch / bare median epoch): on a shared machine whole runs drift by 20%,
and a back-to-back pair sees the same drift. The final train losses must agree to 5 decimals -- the self-check
PyTorch Lightning's parity benchmark uses against plain PyTorch -- or the script exits 1.

    python bench/engine_overhead.py [--epochs 12] [--repeats 8] [--override model.width=128]

Goals: time ratio <= 1.05, memory ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# --------------------------------------------------------------------------- engine child


def run_engine(epochs: int) -> dict:
    import logging

    from model.config import load_config
    from model.train import train

    config = load_config(CONFIG, bench_overrides(epochs))
    marks: list[float] = []
    cpu_marks: list[float] = []  # process CPU time (all threads: the writer's work counts)

    class EpochTimer(logging.Handler):  # the engine logs "epoch N/M ..." once an epoch is done
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("epoch "):
                marks.append(time.perf_counter())
                cpu_marks.append(time.process_time())

    logging.getLogger("model").addHandler(EpochTimer())
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        results = train(config, Path(tmp) / "run", fresh=True, config_path=str(CONFIG),
                        allow_defaults=True)
        ended = time.perf_counter()
        log_rows = json.loads((Path(tmp) / "run" / "metric_history.json").read_text())["rows"]
    epoch_times = [b - a for a, b in itertools.pairwise(marks)]  # epoch 2..N, I/O included
    compute = [float(r["epoch_seconds"]) for r in log_rows[1:]]
    return {"epoch_times": epoch_times, "compute_times": compute,
            "epoch_cpu": [b - a for a, b in itertools.pairwise(cpu_marks)],
            "finish_seconds": ended - marks[-1], "total_seconds": ended - started,
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

    epoch_times, epoch_cpu, train_loss = [], [], math.nan
    for epoch in range(1, epochs + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
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
        epoch_times.append(time.perf_counter() - started)
        epoch_cpu.append(time.process_time() - cpu_started)
        del val_loss, val_accuracy, val_recall
    return {"epoch_times": epoch_times[1:], "epoch_cpu": epoch_cpu[1:], "final_train_loss": train_loss,
            "peak_rss_mib": peak_rss_mib()}


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
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per side (1: least disturbed by other load)")
    parser.add_argument("--override", action="append", default=[],
                        help="config override for both sides, e.g. model.width=128")
    parser.add_argument("--child", choices=["engine", "bare"])
    args = parser.parse_args()
    EXTRA_OVERRIDES.extend(args.override)
    if args.child:
        out = run_engine(args.epochs) if args.child == "engine" else run_bare(args.epochs)
        print(json.dumps(out))
        return 0

    engine_runs, bare_runs = [], []
    pair_ratios, cpu_ratios = [], []
    for i in range(args.repeats):  # alternate (and swap who goes first), so drifting load hits both alike
        order = ("bare", "engine") if i % 2 == 0 else ("engine", "bare")
        got = {kind: child(kind, args.epochs, args.threads) for kind in order}
        bare_runs.append(got["bare"])
        engine_runs.append(got["engine"])
        pair_ratios.append(statistics.median(got["engine"]["epoch_times"])
                           / statistics.median(got["bare"]["epoch_times"]))
        cpu_ratios.append(statistics.median(got["engine"]["epoch_cpu"])
                          / statistics.median(got["bare"]["epoch_cpu"]))
    engine_epoch = statistics.median(t for r in engine_runs for t in r["epoch_times"])
    engine_compute = statistics.median(t for r in engine_runs for t in r["compute_times"])
    bare_epoch = statistics.median(t for r in bare_runs for t in r["epoch_times"])
    engine_mem = max(r["peak_rss_mib"] for r in engine_runs)
    bare_mem = max(r["peak_rss_mib"] for r in bare_runs)
    engine_loss = engine_runs[0]["final_train_loss"]
    bare_loss = bare_runs[0]["final_train_loss"]
    # On a shared machine one run's epochs can all be 20% slow; a ratio per back-to-back pair,
    # then the median over pairs, cancels most of that drift.
    time_ratio, mem_ratio = statistics.median(pair_ratios), engine_mem / bare_mem
    quartiles = statistics.quantiles(pair_ratios, n=4) if len(pair_ratios) > 1 else [time_ratio] * 3
    losses_agree = round(engine_loss, 5) == round(bare_loss, 5)

    print(f"engine overhead on {CONFIG.relative_to(REPO_ROOT)} {' '.join(args.override)} "
          f"({args.epochs} epochs, "
          f"{args.repeats} runs each, {args.threads} torch thread(s), first epoch dropped, medians)")
    print("    (bare: train pass + val loss, accuracy and per-class recall; no checkpoints, "
          "no files)")
    print(f"  epoch time   engine {engine_epoch * 1000:8.1f} ms   bare {bare_epoch * 1000:8.1f} ms"
          f"   ratio {time_ratio:.3f}  (goal <= 1.05) {'OK' if time_ratio <= 1.05 else 'MISSED'}")
    print(f"    ratio = median over {len(pair_ratios)} back-to-back pairs; quartiles "
          f"{quartiles[0]:.3f} .. {quartiles[2]:.3f}, range {min(pair_ratios):.3f} .. {max(pair_ratios):.3f}")
    cpu_ratio = statistics.median(cpu_ratios)
    print(f"  CPU time per epoch (all threads, so the writer's fsyncs count; time the process "
          f"was not running does not): ratio {cpu_ratio:.3f}, range {min(cpu_ratios):.3f} .. {max(cpu_ratios):.3f}")
    print(f"    engine breakdown: train+eval {engine_compute * 1000:.1f} ms, checkpoints+logs "
          f"{(engine_epoch - engine_compute) * 1000:.1f} ms; once at the end (final.pt, test "
          f"split, plots): {statistics.median(r['finish_seconds'] for r in engine_runs):.2f} s")
    print(f"  peak memory  engine {engine_mem:8.1f} MiB  bare {bare_mem:8.1f} MiB  "
          f"ratio {mem_ratio:.3f}  (goal <= 1.05) {'OK' if mem_ratio <= 1.05 else 'MISSED'}")
    print("    (the plots are drawn once at the end by a child process, python -m model.plots)")
    print(f"  final train loss  engine {engine_loss:.8f}  bare {bare_loss:.8f}  "
          f"{'agree to 5 decimals' if losses_agree else 'DISAGREE'}")
    return 0 if losses_agree else 1


if __name__ == "__main__":
    sys.exit(main())
