"""The benchmarks (bench/engine_overhead.py, bench/writer_memory.py,
bench/callback_overhead.py) still run.

The overhead bench reaches into the engine (its epoch log line, ``model.train.open_writer``,
the writer's job format) to interleave the two loops and to switch the files off; an engine
change that breaks one of those would leave the README's figures unreproducible; the
callback bench times Lightning fits turn by turn through its callback hooks. Each runs
tiny here and must print what it promises. No timing or memory figure is asserted: those
are the benches' business.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> str:
    """The bench's output; it must exit 0 (its own self-checks passed)."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout
    return proc.stdout


def test_the_engine_overhead_bench_runs_and_checks_itself() -> None:
    out = run_bench("engine_overhead.py", "--epochs", "3", "--repeats", "1")
    assert re.search(r"epoch time\s+engine\s+[\d.]+ ms\s+bare\s+[\d.]+ ms\s+ratio \d\.\d{3}", out), out
    assert re.search(r"per-epoch files off \(diagnostic\): ratio \d\.\d{3}", out), out
    assert re.search(r"peak memory\s+engine\s+[\d.]+ MiB\s+bare\s+[\d.]+ MiB\s+ratio \d\.\d{3}", out), out
    assert "writer: ProcessWriter" in out, out
    assert re.search(r"agree to 5 decimals \(3 runs\)", out), out  # interleaved, files off, alone


def test_the_writer_memory_bench_runs_and_checks_itself() -> None:
    out = run_bench("writer_memory.py", "--mib", "8", "--epochs", "2")
    assert re.search(r"writer peak memory\s+[\d.]+ MiB = \d+\.\d\d x the checkpoint", out), out
    assert re.search(r"held by the hand-over: \d+\.\d{3} s", out), out
    assert "loaded back with weights_only=True: equal" in out, out


@pytest.mark.slow
def test_the_callback_overhead_bench_runs() -> None:
    """bench/callback_overhead.py, two tiny Lightning fits taking turns: it prints its ratios."""
    import importlib.util

    if importlib.util.find_spec("lightning") is None:
        pytest.skip("lightning is not installed (pip install -e '.[trainers]')")
    out = run_bench("callback_overhead.py", "--epochs", "2", "--repeats", "1", "--samples", "512")
    assert re.search(r"lightning epoch without the callback: [\d.]+ s wall, [\d.]+ s CPU", out), out
    assert re.search(r"inside the callback: [\d.]+ ms CPU per epoch; one judgement [\d.]+ ms", out), out
    assert re.search(r"callback overhead: ratio \d+\.\d{3} wall, \d+\.\d{3} CPU \(medians of 1 interleaved", out), out


def test_the_hostile_bench_runs_and_checks_itself() -> None:
    """bench/hostile.py on one hostile run dir (a FIFO for a log): it prints the worst case
    against the healthy baseline and counts the cases that held."""
    out = run_bench("hostile.py", "h_fifo_log", "--no-warm")
    assert re.search(r"baseline \(healthy\)\s+[\d.]+ s\s+[\d.]+ MiB", out), out
    assert re.search(r"worst wall\s+[\d.]+ s \(h_fifo_log\); baseline [\d.]+ s; ratio \d+\.\d\d", out), out
    assert re.search(r"worst peak RSS [\d.]+ MiB \(h_fifo_log\); baseline [\d.]+ MiB; ratio \d+\.\d\d", out), out
    assert "1 cases, 1 held" in out, out
