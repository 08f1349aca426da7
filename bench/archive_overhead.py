"""What archiving costs an acceptance session: time with ``--mlgates-archive=on`` over
``off`` on the default run, measured in one run of this script.

The archive (fingerprint of every file of the run, four files in a new dir, one ledger
line under a file lock, one ``git rev-parse``) must stay under 5% of a session, or people
will switch it off.  Sessions alternate on/off so that a machine getting busier or quieter
affects both the same; the ratio is of the medians::

    .venv/bin/python bench/archive_overhead.py                       # trains runs/bench-archive once
    .venv/bin/python bench/archive_overhead.py --run-dir runs/default --repeat 7

Prints one line per session, then ``ratio on/off = 1.012 (goal < 1.05)``; exits 1 when the
goal is missed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.05


def train(run_dir: Path) -> None:
    command = [sys.executable, "-m", "model", "train", "--config", "configs/default.yaml",
               "--run-dir", str(run_dir), "--fresh"]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)


def session(run_dir: Path, archive: str) -> float:
    """Wall time of ``pytest acceptance/ --run-dir D`` as a user types it."""
    command = [sys.executable, "-m", "pytest", "acceptance/", "--run-dir", str(run_dir), "-q",
               "-p", "no:cacheprovider", "-p", "pytest_mlgates.archive",
               f"--mlgates-archive={archive}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        raise SystemExit(f"archive_overhead: pytest exited {proc.returncode}: {tail}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="an existing run (default: train configs/default.yaml once)")
    parser.add_argument("--repeat", type=int, default=5, help="sessions per setting")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="mlgates-bench-"))
    try:
        if args.run_dir is None:
            run_dir = scratch / "run"
            print(f"training configs/default.yaml into {run_dir} ...", flush=True)
            train(run_dir)
        else:
            run_dir = scratch / "run"
            shutil.copytree(args.run_dir, run_dir,
                            ignore=lambda d, n: ["acceptance"] if Path(d) == args.run_dir else [])
        session(run_dir, "off")  # warm the file cache and the bytecode
        times: dict[str, list[float]] = {"on": [], "off": []}
        for index in range(args.repeat):
            order = ("on", "off") if index % 2 == 0 else ("off", "on")
            for setting in order:
                elapsed = session(run_dir, setting)
                times[setting].append(elapsed)
                print(f"session {index + 1} archive={setting:<3} {elapsed:7.3f} s", flush=True)
        ledger = run_dir / "acceptance" / "ledger.jsonl"
        lines = len(ledger.read_text().splitlines()) if ledger.exists() else 0
        on, off = statistics.median(times["on"]), statistics.median(times["off"])
        ratio = on / off
        print(f"median on {on:.3f} s, off {off:.3f} s; {lines} sessions archived")
        sys.path.insert(0, str(REPO_ROOT / "src"))
        from pytest_mlgates.fingerprint import fingerprint

        started = time.perf_counter()
        _, files = fingerprint(run_dir)
        print(f"fingerprint of {len(files)} files: "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")
        print(f"ratio on/off = {ratio:.3f} (goal < {GOAL})")
        return 0 if ratio < GOAL else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
