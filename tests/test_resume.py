"""Resume after SIGKILL is bit-exact on CPU, and a kill mid-write never costs last.pt.

Both tests kill a real ``python -m model train`` subprocess, resume it *without*
``--fresh``, and compare with an uninterrupted run of the same seed: every tensor of the
final weights ``torch.equal``, every logged number (all but ``epoch_seconds``) equal.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, log_rows, run_model, small_overrides, train_command

pytestmark = pytest.mark.slow  # real trainings, killed and resumed

EPOCHS = 6
RESUME_OVERRIDES = (*small_overrides, f"train.epochs={EPOCHS}", "gates.inflight=null",
                    "train.ema_decay=0.5", "model.dropout=0.2",  # EMA and dropout: more state
                    "model.width=8")  # a narrow CNN: its BatchNorm state, less CPU per epoch


def _start(run: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(train_command(run, RESUME_OVERRIDES, "configs/default.yaml", "--fresh"),
                            cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for training"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _assert_same_as_uninterrupted(run: Path, reference: Path) -> None:
    got, want = log_rows(run), log_rows(reference)
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, EPOCHS + 1)]  # none lost, none twice
    for g, w in zip(got, want):
        for col in w:
            if col != "epoch_seconds":
                assert g[col] == w[col], (g["epoch"], col, g[col], w[col])
    final, ref = (torch.load(p / "checkpoints/final.pt", weights_only=True) for p in (run, reference))
    for part in ("model", "ema"):
        assert final[part].keys() == ref[part].keys()
        for key in ref[part]:
            assert torch.equal(final[part][key], ref[part][key]), (part, key)
    results = json.loads((run / "training_results.json").read_text())
    ref_results = json.loads((reference / "training_results.json").read_text())
    assert results["status"] == "completed"
    assert results["best"] == ref_results["best"]
    assert results["test"] == ref_results["test"]
    history = json.loads((run / "metric_history.json").read_text())["rows"]
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))


def test_sigkill_at_a_random_point_after_epoch_2_then_resume_is_bit_exact(tmp_path, trained_run):
    reference = trained_run(RESUME_OVERRIDES)
    run = tmp_path / "run"
    proc = _start(run)
    # A random epoch boundary after epoch 2, then a random moment inside the next epoch
    # (or its writes). Epochs take ~0.1 s on an idle machine, so the delay stays short
    # enough that the run cannot finish first.
    after = random.randint(2, EPOCHS - 2)
    _wait_for(lambda: len(log_rows(run)) >= after, proc)
    time.sleep(random.uniform(0.0, 0.08))
    _kill(proc)
    killed_after = len(log_rows(run))
    assert killed_after < EPOCHS

    resumed = run_model(train_command(run, RESUME_OVERRIDES))  # no --fresh: resume
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    _assert_same_as_uninterrupted(run, reference)
    prov = json.loads((run / "provenance.json").read_text())
    assert len(prov["resumes"]) == 1 and prov["resumes"][0]["at_epoch"] >= 2


def test_a_kill_while_last_pt_is_being_written_leaves_it_loadable(tmp_path, trained_run):
    reference = trained_run(RESUME_OVERRIDES)
    run = tmp_path / "run"
    # test hook: sleep between the temp file's fsync and its rename over last.pt
    proc = _start(run, env={"MODEL_TEST_SLOW_SAVE": "0.4"})
    ckpts = run / "checkpoints"
    _wait_for(lambda: len(log_rows(run)) >= 1 and any(ckpts.glob(".last.pt.*.tmp")), proc)
    _kill(proc)
    assert any(ckpts.glob(".last.pt.*.tmp"))  # killed mid-write, for sure
    # the process that was writing is gone: past its 0.4 s sleep, still no rename
    time.sleep(1.0)
    assert any(ckpts.glob(".last.pt.*.tmp"))
    before = torch.load(ckpts / "last.pt", weights_only=True)  # the previous last.pt, intact
    assert before["epoch"] >= 1

    resumed = run_model(train_command(run, RESUME_OVERRIDES))
    assert resumed.returncode == 0, resumed.stderr
    assert not any(ckpts.glob("*.tmp"))  # the stale temp file was cleaned up
    _assert_same_as_uninterrupted(run, reference)
