"""The archive with real gate files on a real trained run, under real xdist workers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMALL_OVERRIDES
from pytest_mlgates.ledger import read_ledger

pytestmark = pytest.mark.slow
MLGATES = [sys.executable, "-m", "pytest_mlgates.cli"]


def acceptance(run: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # -p pytest_mlgates.archive: harmless once plugin.py registers the archive itself
    command = [sys.executable, "-m", "pytest", "acceptance/", "--run-dir", str(run),
               "-p", "no:cacheprovider", "-p", "pytest_mlgates.archive", *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def mlgates(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MLGATES, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False)


@pytest.fixture
def run(trained_run: Callable[..., Path], copy_run: Callable[[Path, Path], Path],
        tmp_path: Path) -> Path:
    return copy_run(trained_run(SMALL_OVERRIDES), tmp_path / "run")


def test_real_gates_under_xdist_archive_once_then_a_changed_checkpoint_is_stale(
    run: Path,
) -> None:
    assert mlgates("verdict", str(run)).returncode == 4  # UNCHECKED

    proc = acceptance(run, "-n", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    [entry] = read_ledger(run / "acceptance" / "ledger.jsonl").entries
    assert entry["verdict"] == "GREEN"
    gates = {c["name"]: c["gate"] for c in entry["criteria"]}
    assert gates["finite_log"] == "finite_log" and gates["val_loss_decreases"] == "check"
    assert len(entry["criteria"]) >= 20
    assert "checkpoints/best_val_loss.pt" in entry["files"]
    dirs = [p for p in (run / "acceptance").iterdir() if p.is_dir()]
    assert [d.name for d in dirs] == [entry["archive_dir"]]
    log = (dirs[0] / "log.txt").read_text()
    assert "2 workers" in log and "criterion" in log and "finite_log" in log
    suite = ET.parse(dirs[0] / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == str(len(entry["criteria"])) and suite.get("failures") == "0"

    verdict = mlgates("verdict", str(run))
    assert verdict.returncode == 0 and verdict.stdout.startswith("ACCEPTED")

    checkpoint = run / "checkpoints" / "best_val_loss.pt"
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    verdict = mlgates("verdict", str(run), "--json")
    assert verdict.returncode == 3
    result = json.loads(verdict.stdout)
    assert result["verdict"] == "STALE"
    assert result["changes"] == {"added": [], "removed": [],
                                 "changed": ["checkpoints/best_val_loss.pt"]}


def test_real_red_then_fixed_run_shows_the_flip(run: Path, tmp_path: Path) -> None:
    plot = run / "plots" / "loss_curve.png"
    kept = tmp_path / "loss_curve.png"
    shutil.copy(plot, kept)
    plot.write_bytes(plot.read_bytes()[:40])  # a truncated plot: RED
    assert acceptance(run, "-q").returncode == 1

    verdict = mlgates("verdict", str(run))
    assert verdict.returncode == 1 and verdict.stdout.startswith("REJECTED")
    red = [line.split()[1] for line in verdict.stdout.splitlines()[2:]]
    assert red == ["plots"]

    shutil.copy(kept, plot)  # fixed
    assert acceptance(run, "-q").returncode == 0
    history = mlgates("history", str(run))
    assert history.returncode == 0
    assert [line.split()[2] for line in history.stdout.splitlines()[1:3]] == ["RED", "GREEN"]
    assert "plots: RED→GREEN at session 2" in history.stdout or \
        "plots: RED->GREEN at session 2" in history.stdout
    assert mlgates("verdict", str(run)).returncode == 0
