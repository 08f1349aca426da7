"""How long `pytest -m preflight --config configs/default.yaml` takes, imports included.

The goal is "seconds, not minutes" (under 15 s on two CPU cores): a preflight that is
slow does not get run. This measures the wall time of the whole command in a fresh
subprocess, as a user would type it, a few times, and prints the median::

    .venv/bin/python bench/preflight_time.py            # 3 repeats of configs/default.yaml
    .venv/bin/python bench/preflight_time.py --config configs/other.yaml --repeat 5

It also runs the preflight checks in-process once and prints each check's own time, so a
slow check can be found without a profiler.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 15.0


def time_session(config: str) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "pytest", "-m", "preflight", "--config", config, "-p", "no:cacheprovider", "-q"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=REPO_ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
    return elapsed, proc.returncode, tail


def time_checks(config: str) -> list[tuple[str, float, str]]:
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from model.mlgates import config_subject
    from pytest_mlgates.preflight_checks import CHECK_ORDER, PreflightSuite

    suite = PreflightSuite(config_subject(REPO_ROOT / config))
    rows = []
    for name in CHECK_ORDER:
        started = time.perf_counter()
        outcome = suite.outcome(name)
        rows.append((name, time.perf_counter() - started, outcome.status))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    times = []
    for i in range(args.repeat):
        elapsed, code, tail = time_session(args.config)
        times.append(elapsed)
        print(f"run {i + 1}: {elapsed:6.2f} s  exit {code}  {tail}")
    median = statistics.median(times)
    verdict = "within" if median < GOAL_S else "OVER"
    print(f"pytest -m preflight --config {args.config}: median {median:.2f} s over {len(times)} runs "
          f"({verdict} the {GOAL_S:g} s goal)")
    print("per check, in-process (the first check that needs torch/data pays for the imports):")
    for name, seconds, status in time_checks(args.config):
        print(f"  {name:24s} {seconds:6.2f} s  {status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
