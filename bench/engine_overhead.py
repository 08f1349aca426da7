"""What the engine costs over a bare hand-written loop, per epoch, measured in one run.

Same model, data, data order, initial weights, batch size, optimizer and lr schedule; the
bare loop is the textbook one (forward, loss, backward, step, zero_grad, scheduler step,
then a validation pass computing what any loop that logs val loss and accuracy does: val
loss, accuracy and per-class recall -- not the engine's F1/AUROC, and no file). The
engine is measured as users run it: its epoch includes its metrics, the RNG capture for
a bit-exact resume, the epoch's checkpoint snapshot (``torch.save`` into memory) handed
to its writer thread (which writes it to a temp file with the rewritten logs, fsyncs,
``os.replace``s, while the next epoch trains), and train.log. The hand-over is made
after the bare loop's turn, so the writes overlap the engine's own next epoch, as in any
run, not the bare loop's turn (the bench replaces ``model.train.BackgroundWriter`` with
the same writer, deferred).

**Interleaved, in one process.** On a shared 2-core machine whole runs drift by 20% from
one minute to the next, and the same loop in two processes differs by several % for
their whole lives (where their memory landed, which CPU they got), more than the 2%
being measured. So both loops run in one process, taking turns one epoch each: the
engine's ``train()`` runs, and each time it logs an epoch's line the bare loop trains one
epoch of its own model before the engine goes on (the engine restores every RNG stream
after that line, so both still train the exact runs they would alone). Each pair of
epochs sees the same machine, CPU and allocator. The first epoch is warm-up and dropped.

It prints:

* **the engine's cost per epoch in ms**: the median over all pairs of (engine epoch -
  bare epoch). Unlike a ratio it does not depend on how long this machine's epoch is;
* **the time ratio**: the median over ``--repeats`` runs (fresh processes) of each run's
  median (engine epoch / bare epoch). By default both loops train ``configs/default.yaml``'s
  CNN on the 64x64 ``stamps`` data, whose epochs take >= 0.5 s here (a ratio on a 50 ms
  toy epoch measures the toy, not the engine); ``--override data.name=digits`` (any
  ``--override`` replaces the default ones) gives the default config's short digits
  epochs, where the ms figure is the most precise;
* where the engine's extra time goes: its train+eval (its own ``epoch_seconds``) and the
  rest (the checkpoint, the logs, the bookkeeping), medians;
* **peak memory**, each loop alone in its own process (``ru_maxrss``);
* **the final train losses**, which must agree to 8 decimals (PyTorch Lightning's parity
  benchmark asks 5), or the script exits 1.

Two diagnostics, each another interleaved run per repeat, paired with the engine's:
``--files-off`` (no per-epoch file: what the durable checkpoint and logs cost) and
``--inline-writes`` (the alternative to the writer thread: the batch written on the
training thread, ``torch.save`` straight into the temp files, as nanoGPT saves). The
engine has no switch for either.

    python bench/engine_overhead.py [--epochs 8] [--repeats 6] [--override data.name=digits]
        [--files-off] [--inline-writes]

Goals: <= 5 ms per epoch; time ratio <= 1.02 at epochs of >= 0.5 s; memory ratio <= 1.05.
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
# epochs of >= 0.5 s on the 2-core dev machine: the default CNN (width 32, a 0.35 MiB
# checkpoint) on the 64x64x3 stamps instead of 8x8 digits -- a longer epoch, the same
# kind of checkpoint (a wider net would also grow the checkpoint the engine writes)
DEFAULT_OVERRIDES = ["data.name=stamps", "data.imbalance=null"]

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


# --------------------------------------------------------------------------- the writers


def writer_class(kind: str) -> type:
    """What replaces ``model.train.BackgroundWriter`` in a bench run: the engine's own
    writer with its hand-over deferred to after the bare loop's turn ("thread": the
    snapshot and the writes then overlap the engine's own next epoch, as in any run, not
    the bare loop's turn), or a diagnostic: "inline" (the batch written on the training
    thread, ``torch.save`` straight into the temp files, as nanoGPT saves) or "files-off"
    (nothing written; metric_history.json kept in memory for the run's epoch_seconds)."""
    from model.checkpoint import BackgroundWriter, write_files_atomically

    class Deferred(BackgroundWriter):
        history = b""

        def __init__(self) -> None:
            super().__init__()
            self.deferred: list[tuple[Any, Any]] = []

        def submit(self, files: Any, then: Any = None) -> None:
            self.deferred.append((files, then))

        def release(self) -> None:  # after the bare loop's turn
            while self.deferred:
                files, then = self.deferred.pop(0)
                if kind == "thread":
                    super().submit(files, then)
                    continue
                if kind == "inline":
                    write_files_atomically(files)
                else:
                    self.history = {Path(p).name: d for p, d in files}["metric_history.json"]
                if then is not None:
                    then()

        def wait(self) -> None:
            if kind != "thread":  # the diagnostics write on the training thread, in turn
                self.release()
            super().wait()

    return Deferred


# --------------------------------------------------------------------------- children


def run_engine(epochs: int, bare: BareLoop | None, writes: str = "thread") -> dict:
    """The engine's run; with `bare`, the bare loop takes its turn after each epoch line."""
    import logging

    import model.train as train_module
    from model.config import load_config

    config = load_config(CONFIG, bench_overrides(epochs))
    marks: list[tuple[float, float]] = []  # (engine done, bare done)
    writers: list[Any] = []
    cls = writer_class(writes)

    def make_writer() -> Any:
        writers.append(cls())
        return writers[-1]

    train_module.BackgroundWriter = make_writer  # type: ignore[assignment,misc]

    class Turns(logging.Handler):  # the engine logs "epoch N/M ..." once an epoch is done
        def emit(self, record: logging.LogRecord) -> None:
            if not record.getMessage().startswith("epoch "):
                return
            engine_done = time.perf_counter()
            if bare is not None:
                bare.epoch(len(marks) + 1)
            marks.append((engine_done, time.perf_counter()))
            writers[0].release()  # the epoch's files: they overlap the engine's next epoch

    logging.getLogger("model").addHandler(Turns())
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        results = train_module.train(config, Path(tmp) / "run", fresh=True,
                                     config_path=str(CONFIG), allow_defaults=True)
        history = writers[0].history if writes == "files-off" else \
            (Path(tmp) / "run" / "metric_history.json").read_bytes()
        log_rows = json.loads(history)["rows"]
    resumes = [started] + [m[1] for m in marks[:-1]]
    return {"engine_epochs": [m[0] - r for m, r in zip(marks, resumes)],
            "bare_epochs": [m[1] - m[0] for m in marks],
            "compute_times": [float(r["epoch_seconds"]) for r in log_rows],
            "final_train_loss": results["final"]["train_loss"],
            "bare_final_train_loss": bare.train_loss if bare is not None else None,
            "peak_rss_mib": peak_rss_mib()}


def run_child(kind: str, epochs: int) -> dict:
    if kind.startswith("interleaved"):
        writes = kind.split(":")[1] if ":" in kind else "thread"
        return run_engine(epochs, BareLoop(epochs), writes)
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


def pairs(got: dict) -> list[tuple[float, float]]:
    """(engine epoch, bare epoch) of every epoch but the first (warm-up)."""
    return list(zip(got["engine_epochs"][1:], got["bare_epochs"][1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=6,
                        help="interleaved runs, each a fresh process; (epochs - 1) epoch pairs each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--override", action="append", default=None,
                        help=f"config override for both loops (default: {' '.join(DEFAULT_OVERRIDES)})")
    parser.add_argument("--files-off", action="store_true",
                        help="diagnostic: also run each repeat with no per-epoch file")
    parser.add_argument("--inline-writes", action="store_true",
                        help="diagnostic: also run each repeat with the writes on the training thread")
    parser.add_argument("--verbose", action="store_true", help="print each run's figures")
    parser.add_argument("--child")
    args = parser.parse_args()
    EXTRA_OVERRIDES.extend(DEFAULT_OVERRIDES if args.override is None else args.override)
    if args.child:
        print(json.dumps(run_child(args.child, args.epochs)))
        return 0

    variants = ["thread"] + (["files-off"] if args.files_off else []) \
        + (["inline"] if args.inline_writes else [])
    run_ratios: dict[str, list[float]] = {v: [] for v in variants}
    costs: dict[str, list[float]] = {v: [] for v in variants}
    engine_epochs, bare_epochs, compute = [], [], []
    losses = []
    for i in range(args.repeats):
        for variant in variants:
            got = child(f"interleaved:{variant}", args.epochs, args.threads)
            ps = pairs(got)
            run_ratios[variant].append(statistics.median(e / b for e, b in ps))
            costs[variant] += [e - b for e, b in ps]
            losses.append((got["final_train_loss"], got["bare_final_train_loss"]))
            if variant == "thread":
                engine_epochs += [e for e, _ in ps]
                bare_epochs += [b for _, b in ps]
                compute += got["compute_times"][1:]
            if args.verbose:
                print(f"  run {i + 1} {variant:9s}: median pair ratio {run_ratios[variant][-1]:.4f}, "
                      f"cost {statistics.median(e - b for e, b in ps) * 1000:+.1f} ms/epoch", flush=True)
    alone = {kind: child(kind, args.epochs, args.threads) for kind in ("engine", "bare")}
    losses.append((alone["engine"]["final_train_loss"], alone["bare"]["final_train_loss"]))

    ratios = run_ratios["thread"]
    time_ratio = statistics.median(ratios)
    cost_ms = statistics.median(costs["thread"]) * 1000
    engine_epoch, bare_epoch = statistics.median(engine_epochs), statistics.median(bare_epochs)
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [time_ratio] * 3
    mem_ratio = alone["engine"]["peak_rss_mib"] / alone["bare"]["peak_rss_mib"]
    losses_agree = all(round(a, 8) == round(b, 8) for a, b in losses)
    engine_loss, bare_loss = losses[-1]
    long_enough = bare_epoch >= 0.5

    print(f"engine overhead on {CONFIG.relative_to(REPO_ROOT)} {' '.join(EXTRA_OVERRIDES)} "
          f"({args.epochs} epochs, {args.repeats} interleaved runs, {args.threads} torch "
          f"thread(s), first epoch dropped)")
    print("    (bare: train pass + val loss, accuracy and per-class recall; no checkpoint, "
          "no file)")
    print(f"  epoch time   engine {engine_epoch * 1000:8.1f} ms   bare {bare_epoch * 1000:8.1f} ms")
    print(f"  the engine's cost per epoch: {cost_ms:.1f} ms (goal <= 5 ms) "
          f"{'OK' if cost_ms <= 5 else 'MISSED'}  (median of engine - bare over "
          f"{len(costs['thread'])} epoch pairs)")
    print(f"  time ratio {time_ratio:.4f}  (goal <= 1.02 at epochs >= 0.5 s) "
          f"{('OK' if time_ratio <= 1.02 else 'MISSED') if long_enough else 'n/a: bare epoch < 0.5 s'}")
    print(f"    ratio = median over {len(ratios)} runs of each run's median over its "
          f"{args.epochs - 1} epoch pairs; runs' quartiles {q1:.4f} .. {q3:.4f}, range "
          f"{min(ratios):.4f} .. {max(ratios):.4f}")
    print(f"    the engine's epoch: train+eval {statistics.median(compute) * 1000:.1f} ms, then "
          f"checkpoint, logs and bookkeeping "
          f"{statistics.median(e - c for e, c in zip(engine_epochs, compute)) * 1000:.1f} ms (medians)")
    for variant, label in (("files-off", "per-epoch files off (diagnostic)"),
                           ("inline", "writes inline, on the training thread (diagnostic)")):
        if variant in run_ratios:
            paired = [f - r for r, f in zip(ratios, run_ratios[variant])]
            print(f"  {label}: ratio {statistics.median(run_ratios[variant]):.4f}, cost "
                  f"{statistics.median(costs[variant]) * 1000:.1f} ms per epoch; this minus "
                  f"the engine's, paired by run: ratio {statistics.median(paired):+.4f} (runs: "
                  f"{min(paired):+.4f} .. {max(paired):+.4f})")
    print(f"  peak memory  engine {alone['engine']['peak_rss_mib']:8.1f} MiB  bare "
          f"{alone['bare']['peak_rss_mib']:8.1f} MiB  ratio {mem_ratio:.3f}  (goal <= 1.05) "
          f"{'OK' if mem_ratio <= 1.05 else 'MISSED'}  (each loop alone in its own process)")
    print(f"  final train loss  engine {engine_loss:.8f}  bare {bare_loss:.8f}  "
          f"{'agree to 8 decimals' if losses_agree else 'DISAGREE'} ({len(losses)} runs)")
    return 0 if losses_agree else 1


if __name__ == "__main__":
    sys.exit(main())
