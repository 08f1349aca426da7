"""What the plugin costs pytest: start-up on an empty test dir, and 1,000 criteria.

Prints, from one run on this machine:

* the wall time of ``pytest --collect-only`` on an empty test dir with the plugin over
  without it (``-p no:mlgates``), repetitions alternating, median of each (goal <= 1.05);
* pytest's collection time (its ``pytest_collection`` hook, timed by a conftest) for
  1,000 criteria in generated gate files (goal < 1 s), and the wall time of that command.

    python bench/plugin_overhead.py [--repeat 11]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKS = ("min(val_loss) < first(val_loss)", "final.val_recall_{i} > 0",
          "len(epoch) >= 3 and max(val_macro_f1) > 0.5", "abs(last(val_loss) - best.val_loss) < 1")
GATES = ("finite_log", "class_recall\n    floor: 0", "converged\n    min_improvement: 0.1",
         "best_checkpoints", "generalization_gap\n    max_gap: 0.2")


def pytest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args]


def wall(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 5):  # 5: no tests collected (the empty dir)
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed, proc.stdout


def write_gate_files(root: Path, files: int = 10, per_file: int = 100) -> int:
    """``files`` gate files of ``per_file`` criteria each, checks and gates mixed."""
    for f in range(files):
        lines = [f"title: generated {f}", "exit_criteria:"]
        for i in range(per_file):
            if i % 3 == 2:
                lines += [f"  - name: gate_{i}", f"    gate: {GATES[i % len(GATES)]}"]
            else:
                check = CHECKS[i % len(CHECKS)].format(i=i % 10)
                lines += [f"  - name: check_{i}", f'    check: "{check}"']
        (root / f"generated_{f:02d}.gates.yaml").write_text("\n".join(lines) + "\n")
    return files * per_file


TIMING_CONFTEST = """
import time
from pathlib import Path

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        Path(__file__).with_name("collection_seconds.txt").write_text(
            str(time.perf_counter() - start))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        empty = root / "empty"
        empty.mkdir()
        (root / "pytest.ini").write_text("[pytest]\n")  # no project ini leaks in
        (root / "conftest.py").write_text(TIMING_CONFTEST)
        with_plugin, without_plugin = [], []
        wall(pytest_command(str(empty)), root)  # warm the file cache once
        for _ in range(args.repeat):
            with_plugin.append(wall(pytest_command(str(empty)), root)[0])
            without_plugin.append(wall(pytest_command("-p", "no:mlgates", str(empty)), root)[0])
        on, off = statistics.median(with_plugin), statistics.median(without_plugin)
        print(f"empty test dir, median of {args.repeat}: with plugin {on * 1000:.0f} ms, "
              f"without {off * 1000:.0f} ms, ratio {on / off:.3f} (goal <= 1.05)")

        gates_dir = root / "gates"
        gates_dir.mkdir()
        count = write_gate_files(gates_dir)
        run = root / "run"
        run.mkdir()
        (run / "training_log.csv").write_text("epoch,val_loss\n1,1.0\n")
        collection, walls = [], []
        for _ in range(max(3, args.repeat // 3)):
            elapsed, out = wall(pytest_command(str(gates_dir), "--run-dir", str(run)), root)
            match = re.search(r"(\d+) tests? collected", out)
            if not match or int(match.group(1)) != count:
                raise SystemExit(f"expected {count} items, got:\n{out[-2000:]}")
            collection.append(float((root / "collection_seconds.txt").read_text()))
            walls.append(elapsed)
        print(f"{count} criteria in {count // 100} gate files, median: collection "
              f"{statistics.median(collection):.2f} s (goal < 1 s), "
              f"{statistics.median(walls):.2f} s wall for the whole command")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
