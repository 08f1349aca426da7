"""Many run dirs in one session: time per run at 100, 300 and 1,000 run dirs of a
log-only gate file, measured in one run of this script.  It must grow linearly: the time
per run stays flat as the sweep grows.

Each run dir holds a 20-epoch ``training_log.csv``; the gate file has four criteria (two
``check:`` expressions, ``finite_log``, ``log_complete``), so 1,000 runs are 4,000 items.
One session per size, as a user types it (``pytest gates/ --run-dir r0001 ...``, the run
dirs given in an args file), archive on: each run gets its ledger line, archive dir and
fingerprint.  Then one ``mlgates verdict`` over all the run dirs of the largest size.

    python bench/many_runs.py                       # 100, 300, 1000
    python bench/many_runs.py --sizes 10 30 --repeat 1   # CI-sized
    python bench/many_runs.py --sizes 2 4 --repeat 1 --no-warm   # that it runs (tests/test_benches.py)

Prints, per size: wall time, time per run, and the marginal time per run from the size
before (the extra seconds over the extra runs: flat = linear; a session's fixed start-up
is in the first size's time only); sizes alternate order between repeats.  ``--no-warm``
skips the untimed warm-up session of the smallest size (a quick smoke run, not a figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GATES = """exit_criteria:
  - name: loss_falls
    check: "min(val_loss) < first(val_loss)"
  - name: recall_learned
    check: "final.val_recall_3 > 0"
  - name: finite
    gate: finite_log
  - name: complete
    gate: log_complete
"""


def bench_env() -> dict[str, str]:
    paths = [str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def make_runs(root: Path, count: int) -> list[Path]:
    runs = []
    for index in range(count):
        run = root / f"r{index:04d}"
        run.mkdir(parents=True)
        rows = ["epoch,train_loss,val_loss,val_recall_3"]
        rows += [f"{e},{1 / e:.4f},{1.1 / e + index * 1e-6:.6f},{0.04 * e:.2f}"
                 for e in range(1, 21)]
        (run / "training_log.csv").write_text("\n".join(rows) + "\n")
        runs.append(run)
    return runs


def session(cwd: Path, runs: list[Path], basetemp: Path) -> tuple[float, str]:
    args_file = cwd / "runs.args"
    args_file.write_text("".join(f"--run-dir\n{run}\n" for run in runs))
    command = [sys.executable, "-m", "pytest", "gates", f"@{args_file}", "-q",
               "-p", "no:cacheprovider", f"--basetemp={basetemp}"]
    shutil.rmtree(basetemp, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False,
                          env=bench_env())
    elapsed = time.perf_counter() - started
    last = next((line for line in reversed(proc.stdout.splitlines()) if " passed" in line), "")
    if proc.returncode != 0:
        raise SystemExit(f"many_runs: pytest exited {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-3000:]}")
    return elapsed, last.strip("= ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-warm", action="store_true",
                        help="skip the untimed warm-up session (a quick smoke run)")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    scratch = Path(tempfile.mkdtemp(prefix="mlgates-many-runs-"))
    try:
        (scratch / "gates").mkdir()
        (scratch / "gates" / "many.gates.yaml").write_text(GATES)
        all_runs = make_runs(scratch / "runs", sizes[-1])
        if not args.no_warm:
            session(scratch, all_runs[: sizes[0]], scratch / "tmp")  # warm bytecode, untimed
        times: dict[int, list[float]] = {size: [] for size in sizes}
        for index in range(args.repeat):
            for size in (sizes if index % 2 == 0 else list(reversed(sizes))):
                elapsed, last = session(scratch, all_runs[:size], scratch / "tmp")
                times[size].append(elapsed)
                print(f"repeat {index + 1}: {size:>5} runs  {elapsed:7.2f} s  "
                      f"{elapsed / size * 1000:6.1f} ms per run  ({last})", flush=True)
        previous: tuple[int, float] | None = None
        marginals = []
        for size in sizes:
            median = statistics.median(times[size])
            line = (f"{size:>5} runs: median {median:7.2f} s (min {min(times[size]):.2f}, max "
                    f"{max(times[size]):.2f}); {median / size * 1000:6.1f} ms per run")
            if previous is not None:
                marginal = (median - previous[1]) / (size - previous[0])
                marginals.append(marginal)
                line += (f"; {marginal * 1000:6.1f} ms per run added since {previous[0]} "
                         f"({marginal / marginals[0]:.2f}x the first step's)")
            print(line)
            previous = (size, median)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "verdict",
                               *map(str, all_runs)], capture_output=True, text=True,
                              check=False, env=bench_env(), cwd=scratch)
        elapsed = time.perf_counter() - started
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
        print(f"mlgates verdict over {len(all_runs)} run dirs: {elapsed:.2f} s "
              f"({elapsed / len(all_runs) * 1000:.1f} ms per run), exit {proc.returncode}: "
              f"{summary}")
        return 0 if proc.returncode == 0 else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
