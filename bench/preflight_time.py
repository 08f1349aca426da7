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


# What the project's own code costs before any check: its imports, and the first optimizer
# (torch imports torch._dynamo when the first one is built, 2-5 s here) -- paid by its
# training script too, so the floor under any preflight of this project.
PROJECT_IMPORTS = ("import torch, sklearn.datasets, sklearn.model_selection; "
                   "torch.optim.Adam([torch.zeros(1, requires_grad=True)])")


def session_env() -> dict[str, str]:
    """The environment a user's shell gives: this machine sets PYTHONDONTWRITEBYTECODE=1,
    which makes every session recompile (and pytest re-rewrite) every plugin module; a
    user's Python caches bytecode, so the bench does too (after one untimed warm-up run)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = ""
    return env


def time_command(cmd: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, env=session_env())
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, proc


def time_session(python: str, args: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the child, exit code, last line)."""
    cmd = [python, "-m", "pytest", "-m", "preflight", "-p", "no:cacheprovider", "-q", *args]
    elapsed, cpu, proc = time_command(cmd, cwd)
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
    # the example project's own venv (`make example`: the wheel + requirements.txt), as its
    # user has it; without it, this checkout's venv (more pytest plugins load there)
    own = EXAMPLE / ".venv" / "bin" / "python"
    example_python = str(own) if own.exists() else sys.executable
    print(f"example project's python: {example_python}"
          + ("" if own.exists() else " (no examples/wine_project/.venv: run `make example` first)"))
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(shutil.copytree(EXAMPLE, Path(tmp) / "wine_project",
                                       ignore=shutil.ignore_patterns("runs", ".venv", "__pycache__")))
        time_session(example_python, [], project)  # untimed: bytecode caches, as a user's second run
        example, engine, example_cpu, floor = [], [], [], []
        for i in range(args.repeat):  # they take turns, so all see the same machine
            elapsed, cpu, code, tail = time_session(example_python, [], project)
            example.append(elapsed)
            example_cpu.append(cpu)
            print(f"example run {i + 1}: {elapsed:6.2f} s wall  {cpu:6.2f} s CPU  exit {code}  {tail}")
            elapsed, _, proc = time_command([example_python, "-c", PROJECT_IMPORTS], project)
            floor.append(elapsed)
            print(f"imports {i + 1}: {elapsed:6.2f} s wall  (the project's own imports + first "
                  f"optimizer, exit {proc.returncode})")
            elapsed, cpu, code, tail = time_session(sys.executable, ["--config", args.config], REPO_ROOT)
            engine.append(elapsed)
            print(f"engine  run {i + 1}: {elapsed:6.2f} s wall  {cpu:6.2f} s CPU  exit {code}  {tail}")
        report("pytest -m preflight on examples/wine_project, wall", example, GOAL_S)
        report("pytest -m preflight on examples/wine_project, CPU", example_cpu, None)
        report("the project's own imports + first optimizer (no pytest), wall", floor, None)
        print(f"preflight's own share (session - project imports): "
              f"{statistics.median(example) - statistics.median(floor):.2f} s")
        report(f"pytest -m preflight --config {args.config} (this repository), wall", engine, None)
        print("per check, in-process (the first check that needs torch/data pays for the imports):")
        for target in (f"example={project}", f"engine={args.config}"):
            proc = subprocess.run([sys.executable, __file__, "--checks-of", target], check=False,
                                  capture_output=True, text=True, cwd=REPO_ROOT)
            print(proc.stdout.rstrip() or proc.stderr[-1000:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
