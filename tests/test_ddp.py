"""Data-parallel training under a real ``torchrun --nproc-per-node 2`` on CPU (gloo).

Rank 0 alone writes the run dir and talks to MLflow (one MLflow run, each epoch once), the
contract is the same as a single-process run, and a DDP run killed after epoch 2 resumes
(every rank's RNG and the sharded data order come back) to the same weights as an
uninterrupted DDP run, in the same MLflow run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, log_rows, small_overrides

pytestmark = pytest.mark.slow  # real torchrun trainings

EPOCHS = 4
# a narrow CNN: still BatchNorm buffers (which DDP broadcasts from rank 0) to get back on a
# resume, at a fraction of the default width's CPU time per epoch
DDP_OVERRIDES = (*small_overrides, f"train.epochs={EPOCHS}", "gates.inflight=null", "model.width=8")
TRACKING = importlib.util.find_spec("mlflow") is not None


def _torchrun(run: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "model", "train", "--config", "configs/default.yaml", "--run-dir", str(run)]
    overrides = list(DDP_OVERRIDES)
    if TRACKING:  # beside the run dir: one store per run
        overrides.append(f"tracking.mlflow={{uri: 'sqlite:///{run.parent / 'mlflow.db'}', experiment: ddp}}")
    for override in overrides:
        cmd += ["--override", override]
    return cmd + list(extra)


def _mlflow_steps(db: Path) -> tuple[list[str], list[int], str]:
    """(run ids, the steps val_loss was logged at, the status tag) of a store of one run."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = [r for (r,) in con.execute("SELECT run_uuid FROM runs")]
        steps = [s for (s,) in con.execute("SELECT step FROM metrics WHERE key = 'val_loss' ORDER BY step")]
        tag = con.execute("SELECT value FROM tags WHERE key = 'mlgates.status'").fetchone()
    finally:
        con.close()
    return runs, steps, tag[0] if tag else ""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children of children included)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _wait_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            stat = Path(f"/proc/{pid}/stat")
            with contextlib.suppress(OSError):
                if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # a zombie computes nothing more
            time.sleep(0.05)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "run"
    proc = subprocess.run(_torchrun(run, "--fresh"), cwd=REPO_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_ddp_run_dir_contract(ddp_run):
    rows = log_rows(ddp_run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]  # one row per epoch, not per rank
    results = json.loads((ddp_run / "training_results.json").read_text())
    assert results["status"] == "completed" and results["test"] is not None
    prov = json.loads((ddp_run / "provenance.json").read_text())
    assert prov["world_size"] == 2 and prov["entry_point"].startswith("torchrun --nproc-per-node 2")
    for name in ("final", "last", "best_val_loss", "best_val_macro_f1", "best_val_min_recall"):
        ckpt = torch.load(ddp_run / f"checkpoints/{name}.pt", weights_only=True)
        assert not any(k.startswith("module.") for k in ckpt["model"])  # the bare model's keys
    last = torch.load(ddp_run / "checkpoints/last.pt", weights_only=True)
    assert len(last["rng"]["ranks"]) == 2 and last["world_size"] == 2
    assert "effective batch 128" in (ddp_run / "train.log").read_text()
    assert (ddp_run / "plots/loss_curve.png").is_file()
    if TRACKING:  # rank 0 alone tracks: one run, each epoch once
        assert _mlflow_steps(ddp_run.parent / "mlflow.db")[1:] == ([1, 2, 3, 4], "completed")


def test_ddp_run_killed_after_epoch_2_resumes_to_the_same_weights(ddp_run, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_torchrun(run, "--fresh"), cwd=REPO_ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while len(log_rows(run)) < 2:
        assert proc.poll() is None, "DDP training ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    doomed = [proc.pid, *_descendants(proc.pid)]  # torchrun's workers get their own sessions
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _wait_gone(doomed)
    assert len(log_rows(run)) < EPOCHS

    resumed = subprocess.run(_torchrun(run), cwd=REPO_ROOT, env=_env(), capture_output=True,
                             text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    rows, ref_rows = log_rows(run), log_rows(ddp_run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    for got, want in zip(rows, ref_rows):
        assert {k: v for k, v in got.items() if k != "epoch_seconds"} == \
            {k: v for k, v in want.items() if k != "epoch_seconds"}
    final = torch.load(run / "checkpoints/final.pt", weights_only=True)["model"]
    ref = torch.load(ddp_run / "checkpoints/final.pt", weights_only=True)["model"]
    for key in ref:
        assert torch.equal(final[key], ref[key]), key
    if TRACKING:  # the resume continued the same MLflow run
        runs, steps, status = _mlflow_steps(run.parent / "mlflow.db")
        assert len(runs) == 1 and steps == [1, 2, 3, 4] and status == "completed"
