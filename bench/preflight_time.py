"""How long `pytest -m preflight` takes, imports and collection included, as a user types it.

Two subjects, each timed as a fresh subprocess a few times (median printed):

* the example user project (``examples/wine_project``: its conftest hands a plain PyTorch
  loop over as ``mlgates_subject``) -- goal: under 10 s on two CPU cores;
* this repository's engine, ``pytest -m preflight --config configs/default.yaml`` (its
  conftest hands the engine over; the repository's whole test tree is collected too).

Then the checks of each subject run in-process once, with each check's own time, so a slow
check can be found without a profiler::

    .venv/bin/python bench/preflight_time.py               # 3 repeats of each
    .venv/bin/python bench/preflight_time.py --repeat 5
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
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "wine_project"
GOAL_S = 10.0


def time_session(args: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the child, exit code, last line)."""
    import resource

    cmd = [sys.executable, "-m", "pytest", "-m", "preflight", "-p", "no:cacheprovider", "-q", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""})
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
    return elapsed, cpu, proc.returncode, tail


def time_checks(subject: Any) -> list[tuple[str, float, str]]:
    from pytest_mlgates.preflight_checks import CHECK_ORDER, PreflightSuite

    suite = PreflightSuite(subject)
    rows = []
    for name in CHECK_ORDER:
        started = time.perf_counter()
        outcome = suite.outcome(name)
        rows.append((name, time.perf_counter() - started, outcome.status))
    return rows


def example_subject(project: Path) -> Any:
    """The example project's subject, built by its own conftest's fixture function (in a
    process of its own: the project's ``model.py`` and this repository's engine ``model``
    cannot both be imported)."""
    import importlib.util

    sys.path.insert(0, str(project))
    spec = importlib.util.spec_from_file_location("wine_conftest", project / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fixture = module.mlgates_subject
    function = getattr(fixture, "_get_wrapped_function", None)
    return (function() if function else getattr(fixture, "__wrapped__", fixture))()


def print_checks(label: str, subject: Any) -> None:
    for name, seconds, status in time_checks(subject):
        print(f"  {label:8s} {name:24s} {seconds:6.2f} s  {status}")


def report(label: str, times: list[float], goal: float | None) -> None:
    median = statistics.median(times)
    verdict = "" if goal is None else f" ({'within' if median < goal else 'OVER'} the {goal:g} s goal)"
    print(f"{label}: median {median:.2f} s over {len(times)} runs{verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checks-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.checks_of:  # the in-process part, one subject per process
        kind, _, where = args.checks_of.partition("=")
        if kind == "example":
            print_checks("example", example_subject(Path(where)))
        else:
            from model.mlgates import config_subject

            print_checks("engine", config_subject(REPO_ROOT / where))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(shutil.copytree(EXAMPLE, Path(tmp) / "wine_project",
                                       ignore=shutil.ignore_patterns("runs", ".venv", "__pycache__")))
        example, engine, example_cpu = [], [], []
        for i in range(args.repeat):  # the two take turns, so both see the same machine
            elapsed, cpu, code, tail = time_session([], project)
            example.append(elapsed)
            example_cpu.append(cpu)
            print(f"example run {i + 1}: {elapsed:6.2f} s wall  {cpu:6.2f} s CPU  exit {code}  {tail}")
            elapsed, cpu, code, tail = time_session(["--config", args.config], REPO_ROOT)
            engine.append(elapsed)
            print(f"engine  run {i + 1}: {elapsed:6.2f} s wall  {cpu:6.2f} s CPU  exit {code}  {tail}")
        report("pytest -m preflight on examples/wine_project, wall", example, GOAL_S)
        report("pytest -m preflight on examples/wine_project, CPU", example_cpu, None)
        report(f"pytest -m preflight --config {args.config} (this repository), wall", engine, None)
        print("per check, in-process (the first check that needs torch/data pays for the imports):")
        for target in (f"example={project}", f"engine={args.config}"):
            proc = subprocess.run([sys.executable, __file__, "--checks-of", target], check=False,
                                  capture_output=True, text=True, cwd=REPO_ROOT)
            print(proc.stdout.rstrip() or proc.stderr[-1000:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
