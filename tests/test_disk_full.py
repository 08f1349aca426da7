"""A disk that fills up mid-run: one clear error line, and ``last.pt`` still loads.

No root and no tmpfs needed: the engine runs under ``RLIMIT_FSIZE`` (``ulimit -f``) with
``SIGXFSZ`` ignored, so any write past the limit fails with ``EFBIG`` half-way through --
the same short write a full disk gives (``ENOSPC``). The limit sits between the largest
non-checkpoint file of the run and the size of a checkpoint, so the first checkpoint
write of the resumed run is the one that fails.

The run to resume is made by killing a real engine process (see
``tests/engine_forkserver.py``) after it has written a few epochs; the run under the
limit is a real ``python -m model train`` subprocess, the same command a user would type.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from engine_forkserver import ForkServer

from conftest import REPO_ROOT, train_command

pytestmark = pytest.mark.slow  # real trainings

OVERRIDES = ("train.epochs=4", "train.progress_bar=false", "model.name=mlp", "model.width=8",
             "gates.inflight=null")


def _file_size_limit(limit: int):
    def preexec() -> None:  # in the child, before exec: writes past `limit` bytes fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _argv(run: Path) -> list[str]:
    return train_command(run, OVERRIDES)[3:]  # without "python -m model"


def test_disk_full_mid_checkpoint_is_one_clear_line_and_last_pt_stays_loadable(tmp_path):
    run = tmp_path / "run"
    with ForkServer(str(REPO_ROOT)) as server:  # a run killed after its third epoch's last.pt
        killed = server.run(_argv(run), str(tmp_path / "engine.log"),
                            kill={"event": "log_write", "n": 10})
    assert killed["killed"], (tmp_path / "engine.log").read_text()
    ckpts = run / "checkpoints"
    previous_bytes = (ckpts / "last.pt").read_bytes()
    previous = torch.load(ckpts / "last.pt", weights_only=True)
    assert 1 <= previous["epoch"] < 4

    others = [p.stat().st_size for p in run.rglob("*") if p.is_file() and p.suffix != ".pt"]
    checkpoint_size = len(previous_bytes)
    limit = (max(others) + checkpoint_size) // 2
    assert max(others) < limit < checkpoint_size, (max(others), checkpoint_size)

    proc = subprocess.run(train_command(run, OVERRIDES), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False, env=dict(os.environ),
                          preexec_fn=_file_size_limit(limit))

    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert proc.stderr.strip().splitlines()[-1] == line  # the last word is the error
    assert "checkpoints/" in line and ".pt" in line, line  # names the file being written
    assert "file too large" in line and "no space" in line, line

    # the resume point is untouched: still loadable, byte for byte the previous epoch's
    assert (ckpts / "last.pt").read_bytes() == previous_bytes
    after = torch.load(ckpts / "last.pt", weights_only=True)
    assert after["epoch"] == previous["epoch"]
    for key, tensor in previous["model"].items():
        assert torch.equal(after["model"][key], tensor), key
    assert not list(run.rglob("*.tmp")), "a half-written temp file was left behind"

    results = json.loads((run / "training_results.json").read_text())
    assert results["status"] == "failed"
    assert "File too large" in results["reason"], results["reason"]
    assert "Traceback" in (run / "train.log").read_text()  # the details stay in train.log
