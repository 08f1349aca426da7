"""The benchmarks (bench/engine_overhead.py, bench/callback_overhead.py) still run.

The overhead bench reaches into the engine (its epoch log line, and
``model.train.BackgroundWriter``, which it replaces with the same writer deferred, or a
diagnostic) to interleave the two loops; an engine change that breaks one of those would leave the README's figures
unreproducible; the callback bench times Lightning fits turn by turn through its callback
hooks. Each runs tiny here and must print what it promises. No timing or memory figure is
asserted: those are the benches' business.
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


@pytest.mark.slow
def test_the_engine_overhead_bench_runs_and_checks_itself() -> None:
    # --inline-writes replaces the engine's writer as --files-off does: one covers the seam
    out = run_bench("engine_overhead.py", "--epochs", "2", "--repeats", "1", "--override",
                    "model.width=8", "--inline-writes")
    assert re.search(r"epoch time\s+engine\s+[\d.]+ ms\s+bare\s+[\d.]+ ms", out), out
    assert re.search(r"the engine's cost per epoch: -?[\d.]+ ms \(goal <= 5 ms\)", out), out
    assert re.search(r"time ratio \d\.\d{4}\s+\(goal <= 1\.02 at epochs >= 0\.5 s\)", out), out
    assert re.search(r"checkpoint, logs and bookkeeping -?[\d.]+ ms", out), out
    assert re.search(r"writes inline, on the training thread \(diagnostic\): ratio \d\.\d{4}, "
                     r"cost -?[\d.]+ ms", out), out
    assert re.search(r"peak memory\s+engine\s+[\d.]+ MiB\s+bare\s+[\d.]+ MiB\s+ratio \d\.\d{3}", out), out
    # the final losses of every run agree (interleaved x2 variants, engine and bare alone)
    assert re.search(r"agree to 8 decimals \(3 runs\)", out), out


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
