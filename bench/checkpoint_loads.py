"""An acceptance session over a run of 20 checkpoints, against a hand-written script that
does the same loads, measured in one run of this script (issue 18).

The run (a plain run, generated in a temp dir, removed at the end): ``logs/metrics.csv``
of 20 epochs and ``ckpt/epoch_01.pt`` ... ``ckpt/epoch_20.pt``, each ``{"model":
state_dict, "epoch": k}`` of a small MLP (``--width``: 1024 gives 4.2 M parameters, 17 MB
a file).  The gate file asks two things of every checkpoint -- ``checkpoint_softmax``
(load, build ``benchnet:Net``, a softmax on 16 random rows) and an ``artifact`` gate with
``loads: {softmax: true, ...}`` on the same file -- so 40 checkpoint items, plus two log
criteria.  Timed, each as a fresh subprocess, interleaved, ``--repeat`` times:

* ``hand-written``: ``torch.load(path, weights_only=True)``, ``load_state_dict``, a
  softmax checked finite and summing to 1 -- once per checkpoint (what the two criteria
  ask, written by hand);
* ``gates``: ``pytest gates/ --run-dir run`` as a user types it, the archive on (the
  session hashes every file of the run for its fingerprint: part of the price).

Goal: gates / hand-written <= 1.1.  The session also runs with a counting plugin
(``-p _count_loads``, untimed) that wraps ``torch.load`` and prints how often each file was
loaded: the goal is once each, though two criteria read every file.

    python bench/checkpoint_loads.py                 # 20 checkpoints, 3 repeats
    python bench/checkpoint_loads.py --width 128 --repeat 1   # CI-sized
    python bench/checkpoint_loads.py --checkpoints 2 --width 16 --repeat 1 --no-warm
        # that the bench runs (tests/test_benches.py), not a figure

``--no-warm`` skips the untimed warm-up run of the hand-written script (the counting
session still runs, untimed, before the timed ones).
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
INPUTS = 64

NET = """\
import torch


class Net(torch.nn.Module):
    def __init__(self, width: int = 1024, n_in: int = 64, n_out: int = 10) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(n_in, width), torch.nn.ReLU(),
            torch.nn.Linear(width, width), torch.nn.ReLU(),
            torch.nn.Linear(width, width), torch.nn.ReLU(),
            torch.nn.Linear(width, width), torch.nn.ReLU(),
            torch.nn.Linear(width, n_out))

    def forward(self, x):
        return self.body(x)
"""

HAND_WRITTEN = """\
import sys
from pathlib import Path

import torch

from benchnet import Net

width = int(sys.argv[2])
for path in sorted(Path(sys.argv[1], "ckpt").glob("epoch_*.pt")):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = Net(width=width)
    model.load_state_dict(ckpt["model"])
    model.eval()
    with torch.no_grad():
        p = torch.softmax(model(torch.randn(16, 64)), dim=-1)
    assert torch.isfinite(p).all() and torch.allclose(p.sum(-1), torch.ones(16), atol=1e-4), path
print("ok")
"""

# The fixed cost of a pytest session in this environment: the same imports, no gate.
BARE_TEST = """\
import torch  # noqa: F401

import benchnet  # noqa: F401


def test_nothing():
    assert True
"""

COUNTER = """\
\"\"\"Counts torch.load per file in a pytest session (bench/checkpoint_loads.py).\"\"\"
import collections
import os

import torch

calls = collections.Counter()
_load = torch.load


def counting_load(f, *args, **kwargs):
    name = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", repr(f))
    calls[os.path.basename(str(name))] += 1
    return _load(f, *args, **kwargs)


torch.load = counting_load


def pytest_sessionfinish(session):
    counts = sorted(calls.values())
    print(f"\\ntorch.load calls: {sum(counts)} over {len(counts)} files; "
          f"most for one file: {counts[-1] if counts else 0}")
"""


def gate_file(checkpoints: list[str], width: int) -> str:
    lines = ["title: twenty checkpoints",
             "run: {format: plain, log: logs/metrics.csv, checkpoints: \"ckpt/*.pt\"}",
             "exit_criteria:",
             "  - name: loss_falls",
             "    check: \"min(val_loss) < first(val_loss)\"",
             "  - name: finite",
             "    gate: finite_log"]
    for rel in checkpoints:
        stem = Path(rel).stem
        lines += [f"  - name: softmax_{stem}",
                  "    gate: checkpoint_softmax",
                  f"    checkpoint: {rel}",
                  "    model: \"benchnet:Net\"",
                  f"    kwargs: {{width: {width}}}",
                  f"    input_shape: [16, {INPUTS}]",
                  f"  - name: loads_{stem}",
                  "    gate: artifact",
                  f"    path: {rel}",
                  (f"    loads: {{softmax: true, model: \"benchnet:Net\", kwargs: {{width: {width}}}, "
                   f"input_shape: [16, {INPUTS}]}}")]
    return "\n".join(lines) + "\n"


def make_run(root: Path, count: int, width: int) -> list[str]:
    sys.path.insert(0, str(root / "code"))
    import torch
    from benchnet import Net  # type: ignore[import-not-found]

    run = root / "run"
    (run / "ckpt").mkdir(parents=True)
    (run / "logs").mkdir()
    rows = ["epoch,train_loss,val_loss"] + [f"{e},{1 / e:.4f},{1.2 / e:.4f}" for e in range(1, count + 1)]
    (run / "logs" / "metrics.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    rels = []
    for epoch in range(1, count + 1):
        rel = f"ckpt/epoch_{epoch:02d}.pt"
        torch.save({"model": Net(width=width).state_dict(), "epoch": epoch}, run / rel)
        rels.append(rel)
    return rels


def env_for(root: Path) -> dict[str, str]:
    """Bytecode cached as a user's Python does (this machine sets PYTHONDONTWRITEBYTECODE=1);
    the run's model code on the path, as a user's project has it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    paths = [str(root / "code"), str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    return env


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-warm", action="store_true",
                        help="skip the untimed warm-up run of the hand-written script (a quick smoke run)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="mlgates-ckpt-bench-"))
    try:
        (root / "code").mkdir()
        (root / "code" / "benchnet.py").write_text(NET)
        (root / "code" / "_count_loads.py").write_text(COUNTER)
        (root / "hand_written.py").write_text(HAND_WRITTEN)
        (root / "bare").mkdir()
        (root / "bare" / "test_bare.py").write_text(BARE_TEST)
        rels = make_run(root, args.checkpoints, args.width)
        (root / "gates").mkdir()
        (root / "gates" / "twenty.gates.yaml").write_text(gate_file(rels, args.width))
        size = sum((root / "run" / rel).stat().st_size for rel in rels)
        print(f"{len(rels)} checkpoints of {size / len(rels) / 2**20:.1f} MiB each "
              f"(width {args.width}); {2 * len(rels) + 2} criteria")
        env = env_for(root)
        hand = [sys.executable, str(root / "hand_written.py"), str(root / "run"), str(args.width)]
        gates = [sys.executable, "-m", "pytest", "gates/", "--run-dir", "run", "-q",
                 "-p", "no:cacheprovider", f"--basetemp={root / 'tmp'}"]
        bare = [sys.executable, "-m", "pytest", "bare/", "-q", "-p", "no:cacheprovider",
                f"--basetemp={root / 'tmp'}"]
        imports = [sys.executable, "-c", "import torch, benchnet"]
        commands = {"hand": hand, "gates": gates, "bare": bare, "imports": imports}
        labels = {"hand": "hand-written", "gates": "gates", "bare": "bare pytest", "imports": "imports only"}

        # untimed: bytecode caches filled, the counting session
        if not args.no_warm:
            _, proc = timed(hand, root, env)
            if proc.returncode != 0:
                raise SystemExit(f"checkpoint_loads: the hand-written script failed:\n{proc.stderr[-2000:]}")
        _, proc = timed([*gates, "-p", "_count_loads", "-s"], root, env)
        if proc.returncode != 0:
            raise SystemExit(f"checkpoint_loads: the gate session failed ({proc.returncode}):\n"
                             f"{(proc.stdout + proc.stderr)[-3000:]}")
        counted = next((line for line in proc.stdout.splitlines() if line.startswith("torch.load calls")),
                       "torch.load calls: not printed")
        print(counted)

        times: dict[str, list[float]] = {mode: [] for mode in commands}
        for index in range(args.repeat):
            order = list(commands) if index % 2 == 0 else list(reversed(commands))
            for mode in order:
                elapsed, proc = timed(commands[mode], root, env)
                if proc.returncode != 0:
                    raise SystemExit(f"checkpoint_loads: {mode} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
                times[mode].append(elapsed)
                last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
                print(f"repeat {index + 1} {labels[mode]:<12} {elapsed:6.2f} s  ({last.strip('= ')})", flush=True)
        med = {mode: statistics.median(values) for mode, values in times.items()}
        print("medians: " + ", ".join(f"{labels[mode]} {med[mode]:.2f} s" for mode in commands))
        print(f"ratio gates / hand-written = {med['gates'] / med['hand']:.3f} (goal <= 1.1)")
        # the same two, less what each pays before its first load: a pytest session's start
        # (plugins, collection) and a script's imports
        loads_hand = med["hand"] - med["imports"]
        loads_gates = med["gates"] - med["bare"]
        print(f"past start-up: gates {loads_gates:.2f} s (session - bare pytest), hand-written "
              f"{loads_hand:.2f} s (script - imports): ratio {loads_gates / max(loads_hand, 1e-3):.3f}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
