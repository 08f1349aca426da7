"""The benchmarks (bench/engine_overhead.py, bench/callback_overhead.py,
bench/verdict_cache.py, bench/sweep_scaling.py, bench/many_runs.py, bench/log_scale.py,
bench/hostile.py, bench/checkpoint_loads.py) still run.

The overhead bench reaches into the engine (its epoch log line, and
``model.train.BackgroundWriter``, which it replaces with the same writer deferred, or a
diagnostic) to interleave the two loops; an engine change that breaks one of those would leave the README's figures
unreproducible; the callback bench times Lightning fits turn by turn through its callback
hooks. Each runs on its smallest inputs here (no untimed warm-up runs: ``--no-warm``) and
must print what it promises. No timing or memory figure is asserted: those are the
benches' business. Every bench starts several fresh interpreters (most import torch), so
each test takes seconds: the module is ``slow``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SMALL_OVERRIDES

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str) -> str:
    """The bench's output; it must exit 0 (its own self-checks passed)."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout
    return proc.stdout


def test_the_engine_overhead_bench_runs_and_checks_itself() -> None:
    # --inline-writes replaces the engine's writer as --files-off does: one covers the seam.
    # The bench's own data (stamps, no imbalance: its default), 64 samples and a width-8 net:
    # the four children (interleaved x2, engine and bare alone) then skip scikit-learn's
    # import, which digits would cost each of them
    out = run_bench("engine_overhead.py", "--epochs", "2", "--repeats", "1", "--inline-writes",
                    *(a for o in ("data.name=stamps", "data.n_samples=64", "data.imbalance=null",
                                  "model.width=8") for a in ("--override", o)))
    assert re.search(r"epoch time\s+engine\s+[\d.]+ ms\s+bare\s+[\d.]+ ms", out), out
    assert re.search(r"the engine's cost per epoch: -?[\d.]+ ms \(goal <= 5 ms\)", out), out
    assert re.search(r"time ratio \d\.\d{4}\s+\(goal <= 1\.02 at epochs >= 0\.5 s\)", out), out
    assert re.search(r"checkpoint, logs and bookkeeping -?[\d.]+ ms", out), out
    assert re.search(r"writes inline, on the training thread \(diagnostic\): ratio \d\.\d{4}, "
                     r"cost -?[\d.]+ ms", out), out
    assert re.search(r"peak memory\s+engine\s+[\d.]+ MiB\s+bare\s+[\d.]+ MiB\s+ratio \d\.\d{3}", out), out
    # the final losses of every run agree (interleaved x2 variants, engine and bare alone)
    assert re.search(r"agree to 8 decimals \(3 runs\)", out), out


def test_the_log_scale_bench_runs() -> None:
    """bench/log_scale.py --tiny: a 5,000-step log, the gate session against bare pytest + pandas."""
    out = run_bench("log_scale.py", "--tiny")
    assert re.search(r"log: 5000 steps, eval every 100: [\d.]+ MB CSV", out), out
    assert re.search(r"^gates\s+wall median [\d.]+ .*peak RSS median [\d.]+", out, re.MULTILINE), out
    assert re.search(r"gate session / \(bare pytest( \+ pandas)?\): \d+\.\d\d \(goal <= 1\.5\); "
                     r"gate session peak RSS \d+ MB \(goal <= 400 MB\)", out), out


def test_the_callback_overhead_bench_runs() -> None:
    """bench/callback_overhead.py, two tiny Lightning fits taking turns: it prints its ratios."""
    import importlib.util

    if importlib.util.find_spec("lightning") is None:
        pytest.skip("lightning is not installed (pip install -e '.[trainers]')")
    out = run_bench("callback_overhead.py", "--epochs", "3", "--repeats", "1", "--samples", "512")
    assert re.search(r"lightning epoch without the callback: [\d.]+ s wall, [\d.]+ s CPU", out), out
    assert re.search(r"inside the callback: [\d.]+ ms CPU per epoch; one judgement [\d.]+ ms", out), out
    assert re.search(r"callback overhead: ratio \d+\.\d{3} wall, \d+\.\d{3} CPU \(medians of \d+ interleaved", out), out


def test_the_verdict_cache_bench_runs_and_checks_itself() -> None:
    """bench/verdict_cache.py on an 8 MiB checkpoint: its ratios, and the flipped byte is STALE."""
    out = run_bench("verdict_cache.py", "--size", "8M", "--repeat", "1")
    assert re.search(r"sha256, 1 thread +median [\d.]+ s .* ratio 1\.000", out), out
    for label in ("first verdict", "second verdict", "verdict --rehash"):
        assert re.search(rf"{label} +median [\d.]+ s .*; ratio to one sha256 pass \d+\.\d{{3}}",
                         out), out
    assert "one byte flipped mid-file, mtime restored: exit 3" in out, out


def test_the_sweep_bench_runs_and_compares_outcomes() -> None:
    """bench/sweep_scaling.py on two generated log-only runs: serial and -n 2 agree."""
    pytest.importorskip("xdist")
    out = run_bench("sweep_scaling.py", "--runs", "2", "--repeat", "1", "--log-only", "--no-warm")
    assert "same per-item outcomes serial and -n 2: yes" in out, out
    assert re.search(r"speed-up serial / -n 2 = \d+\.\d{3} \(goal >= 1\.6\); CPU of -n 2 / "
                     r"serial = \d+\.\d{3}", out), out
    assert re.search(r"serial session: fixed cost -?\d+\.\d\d s, -?\d+\.\d{3} s per run; the best -n 2 "
                     r"can do when every worker pays the fixed cost once: \d+\.\d{3}x", out), out


def test_the_many_runs_bench_prints_time_per_run() -> None:
    out = run_bench("many_runs.py", "--sizes", "2", "4", "--repeat", "1", "--no-warm")
    assert re.search(r"4 runs: median +[\d.]+ s .* ms per run; +-?[\d.]+ ms per run added "
                     r"since 2", out), out
    assert "mlgates verdict over 4 run dirs" in out and "4 of 4 run dirs ACCEPTED" in out, out


def test_the_hostile_bench_runs_and_checks_itself(trained_run: Callable[..., Path]) -> None:
    """bench/hostile.py on one hostile run dir (a FIFO for a log): it prints the worst case
    against the healthy baseline and counts the cases that held. The healthy run is the
    session's cached small engine run (--healthy-run): the bench then does not import torch
    and scikit-learn itself to write its synthetic one."""
    out = run_bench("hostile.py", "h_fifo_log", "--no-warm", "--healthy-run",
                    str(trained_run(SMALL_OVERRIDES)))
    assert re.search(r"baseline \(healthy\)\s+[\d.]+ s\s+[\d.]+ MiB", out), out
    assert re.search(r"worst wall\s+[\d.]+ s \(h_fifo_log\); baseline [\d.]+ s; ratio \d+\.\d\d", out), out
    assert re.search(r"worst peak RSS [\d.]+ MiB \(h_fifo_log\); baseline [\d.]+ MiB; ratio \d+\.\d\d", out), out
    assert "1 cases, 1 held" in out, out


def test_the_checkpoint_loads_bench_loads_each_checkpoint_once() -> None:
    """bench/checkpoint_loads.py, smallest: 2 small checkpoints, two criteria on each, and
    the counting plugin sees one torch.load per file in a real pytest session."""
    out = run_bench("checkpoint_loads.py", "--checkpoints", "2", "--width", "16", "--repeat", "1",
                    "--no-warm")
    assert "2 checkpoints of" in out and "6 criteria" in out, out
    assert "torch.load calls: 2 over 2 files; most for one file: 1" in out, out
    assert re.search(r"ratio gates / hand-written = \d+\.\d{3} \(goal <= 1\.1\)", out), out
    assert re.search(r"past start-up: gates -?\d+\.\d\d s .* ratio -?\d+\.\d{3}", out), out
