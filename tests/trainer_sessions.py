"""Shared by the tests of the ultralytics, timm, keras, dvclive and wandb formats: one
trainer script makes every fault's run dir in one process (importing a trainer costs most
of its time), then one real pytest session runs a gate file on all of them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TRAINER_SCRIPTS_DIR, _shared_cache_dir, trainer_env

EPOCHS = 3  # the nan fault poisons the model after epoch 2
#: the faults each script makes in one process (one set per script, so that every test
#: file and the broken corpus share one training per session)
SOURCE_FAULTS: dict[str, tuple[str, ...]] = {
    "keras_run.py": ("healthy", "collapsed", "nan", "no_best", "noval"),
    "dvclive_run.py": ("healthy", "collapsed", "nan", "no_best"),
    "wandb_run.py": ("healthy", "collapsed", "nan", "no_best"),
    "timm_files.py": ("healthy", "collapsed", "nan", "no_best"),
    "ultralytics_files.py": ("healthy", "nan", "no_best", "stopped"),
}

CRITERIA_BLOCK = """\
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: log_complete
    gate: log_complete
  - name: every_class_learned
    gate: class_recall
    floor: 0
  - name: best_checkpoint_per_metric
    gate: best_checkpoints
    metrics: [val_loss]
  - name: val_loss_improves
    gate: converged
    metric: val_loss
    min_improvement: 0.1
"""

# fault -> (criterion that must turn RED, a piece of its one-line message)
EXPECTED_RED = {
    "collapsed": [("every_class_learned", r"recall_3 = 0(\.0+)?\b")],
    "nan": [("no_nan", r"= nan")],
    "no_best": [("best_checkpoint_per_metric", r": not found")],
}


def make_runs(script: str, tmp_path_factory: pytest.TempPathFactory, faults: tuple[str, ...],
              python: str = sys.executable, env: dict[str, str] | None = None) -> dict[str, Path]:
    """``{fault: run dir}`` made by ``tests/trainers/<script>`` in one process (of
    ``python``: another venv's for a trainer that does not import here), once per session:
    xdist workers share them, as they share ``trainer_run``'s."""
    from filelock import FileLock

    out = _shared_cache_dir(tmp_path_factory) / f"{Path(script).stem}-{'-'.join(faults)}"
    done = out.with_suffix(".done")
    with FileLock(str(out) + ".lock"):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            proc = subprocess.run([python, str(TRAINER_SCRIPTS_DIR / script), str(out), "--faults",
                                   ",".join(faults), "--epochs", str(EPOCHS)], capture_output=True, text=True,
                                  timeout=900, env=env or trainer_env(), cwd=out, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{script} failed ({proc.returncode}): {proc.stderr[-3000:]}")
            done.write_text("ok")
    return {fault: out / fault for fault in faults}


def verdicts(output: str) -> dict[tuple[str, str], str]:
    """(criterion, run label) -> PASSED/FAILED/ERROR from ``-rA`` short summary lines."""
    found: dict[tuple[str, str], str] = {}
    for status, criterion, label in re.findall(r"^(PASSED|FAILED|ERROR) \S*::(\w+)\[([\w-]+)\]", output, re.MULTILINE):
        found[(criterion, label)] = status
    return found


def message(output: str, criterion: str, label: str) -> str:
    """The one-line failure message pytest printed for one item."""
    match = re.search(rf"_ gate: {criterion}\[{label}\] _+\n(.*)\n", output)
    return match.group(1) if match else ""


def session(pytester: pytest.Pytester, gates: str, runs: dict[str, Path], *extra: str) -> tuple[dict[tuple[str, str], str], str]:
    """One real pytest session of ``gates`` on every run (labelled by its fault)."""
    (pytester.path / "t.gates.yaml").write_text(gates, encoding="utf-8")
    args = ["t.gates.yaml", "-rA", "-p", "no:cacheprovider", "--mlgates-archive=off", *extra]
    for label, run in runs.items():
        (pytester.path / label).symlink_to(run, target_is_directory=True)
        args += ["--run-dir", label]
    result = pytester.runpytest_subprocess(*args, timeout=300)
    output = result.stdout.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output[-4000:]
    return verdicts(output), output


def assert_green_and_red(found: dict[tuple[str, str], str], output: str, criteria: tuple[str, ...],
                         faults: tuple[str, ...], expected_red: dict[str, list[tuple[str, str]]]) -> None:
    """The healthy run GREEN on every criterion; each fault RED on its own, with its message."""
    assert len(found) == len(criteria) * len(faults), output[-4000:]
    healthy = {c: found[(c, "healthy")] for c in criteria}
    assert set(healthy.values()) == {"PASSED"}, (healthy, output[-4000:])
    for fault, reds in expected_red.items():
        if fault not in faults:
            continue
        for criterion, pattern in reds:
            assert found[(criterion, fault)] == "FAILED", (fault, criterion, output[-4000:])
            line = message(output, criterion, fault)
            assert re.search(pattern, line), (fault, criterion, line)
