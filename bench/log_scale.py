"""A million-step log: the whole gate session against bare pytest plus four lines of pandas.

A plain run logs one row per optimizer step (``step,train_loss,lr``) and an evaluation
every ``--eval-every`` steps (``eval_loss``, empty on the other rows): 1,000,000 steps
make a ~28 MB CSV.  A gate file with a ``run:`` section holds two criteria, ``finite_log``
and ``min(eval_loss) < first(eval_loss)``.  Each repeat runs, taking turns, as separate
processes:

* **gates**: ``pytest GATES --run-dir RUN`` (collection, the log read, both items, the
  terminal table and the archive the session writes into the run dir);
* **bare**: ``pytest -p no:mlgates`` on an empty dir (pytest's own start-up);
* **pandas**: the script a user would write instead (read the CSV, check finiteness,
  compare the min of the evaluations with the first), imports included.

It prints every repeat, then the medians and spread, and the ratio
``gates / (bare + pandas)`` (goal <= 1.5) and the gate session's peak RSS (goal <= 400 MB),
measured per process with ``os.wait4``.  pandas is only the baseline: without it the
baseline is bare pytest alone, and the bench says so.

    python bench/log_scale.py [--steps 1000000] [--repeat 5] [--eval-every 1000]
    python bench/log_scale.py --tiny     # 5,000 steps, one repeat, no warm-up: tests/test_benches.py
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GATES = """\
title: a million optimizer steps
run:
  format: plain
  log: logs/metrics.csv
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: eval_loss_decreases
    check: "min(eval_loss) < first(eval_loss)"
"""

PANDAS = """\
import sys, numpy as np, pandas as pd
log = pd.read_csv(sys.argv[1])
assert all(np.isfinite(log[c].dropna()).all() for c in log), "a non-finite value"
evals = log["eval_loss"].dropna()
assert evals.min() < evals.iloc[0], "eval_loss did not decrease"
"""


def write_log(path: Path, steps: int, eval_every: int) -> int:
    """The CSV a fine-tuning loop writes; returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        out.write("step,train_loss,lr,eval_loss\n")
        lines = []
        for step in range(1, steps + 1):
            train = 2.0 * math.exp(-step / 300_000) + 0.1 * ((step * 7919) % 1000) / 1000
            lr = 3e-4 * (1 - step / (steps + 1))
            cell = f"{1.8 * math.exp(-step / 300_000) + 0.05:.6f}" if step % eval_every == 0 else ""
            lines.append(f"{step},{train:.6f},{lr:.6g},{cell}\n")
            if len(lines) == 10_000:
                out.write("".join(lines))
                lines = []
        out.write("".join(lines))
    return path.stat().st_size


def measure(command: list[str], cwd: Path, expect: tuple[int, ...], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; its exit code must be in ``expect``."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in expect:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{output.decode(errors='replace')[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024  # Linux: KiB


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tiny", action="store_true",
                        help="5,000 steps, eval every 100, one repeat, no warm-up (that the bench runs, not a figure)")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.eval_every, args.repeat = 5000, 100, 1
    has_pandas = importlib.util.find_spec("pandas") is not None
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="mlgates-log-scale-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")  # no project ini leaks in
        run, gates, empty = root / "run", root / "gates", root / "empty"
        gates.mkdir()
        empty.mkdir()
        (gates / "steps.gates.yaml").write_text(GATES)
        (root / "pandas_check.py").write_text(PANDAS)
        csv_path = run / "logs" / "metrics.csv"
        size = write_log(csv_path, args.steps, args.eval_every)
        print(f"log: {args.steps} steps, eval every {args.eval_every}: {size / 1e6:.1f} MB CSV")
        commands = {
            "gates": ([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(gates), "--run-dir", str(run)], (0,)),
            "bare": ([python, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:mlgates", "-q", str(empty)], (5,)),
        }
        if has_pandas:
            commands["pandas"] = ([python, str(root / "pandas_check.py"), str(csv_path)], (0,))
        else:
            print("pandas is not installed: the baseline is bare pytest alone")
        # Bytecode as an installed package has it: written once (the warm-up run) into a
        # cache of the bench's own, read after (PYTHONDONTWRITEBYTECODE would make every
        # session compile -- and pytest assertion-rewrite -- each module it imports again).
        # (--tiny: the environment's own bytecode, no warm-up: it shows the bench runs, no figure.)
        env = dict(os.environ)
        if not args.tiny:
            env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        if not args.tiny:
            for command, expect in commands.values():  # warm the file cache and the bytecode once
                measure(command, root, expect, env)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        peaks: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(args.repeat):
            order = list(commands) if i % 2 == 0 else list(reversed(commands))
            line = []
            for name in order:
                command, expect = commands[name]
                elapsed, peak = measure(command, root, expect, env)
                walls[name].append(elapsed)
                peaks[name].append(peak)
                line.append(f"{name} {elapsed:.2f} s {peak:.0f} MB")
            base = walls["bare"][-1] + (walls["pandas"][-1] if has_pandas else 0.0)
            print(f"repeat {i + 1}: " + ", ".join(line) + f"; ratio {walls['gates'][-1] / base:.2f}")
        for name in commands:
            print(f"{name:6s} wall {spread(walls[name])} s; peak RSS {spread(peaks[name])} MB")
        baseline = statistics.median(walls["bare"]) + (statistics.median(walls["pandas"]) if has_pandas else 0.0)
        ratio = statistics.median(walls["gates"]) / baseline
        what = "bare pytest + pandas" if has_pandas else "bare pytest"
        print(f"gate session / ({what}): {ratio:.2f} (goal <= 1.5); "
              f"gate session peak RSS {statistics.median(peaks['gates']):.0f} MB (goal <= 400 MB); "
              f"medians of {args.repeat} interleaved repeats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
