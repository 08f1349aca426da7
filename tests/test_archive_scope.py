"""What a GREEN session vouches for: the criteria it ran, as the gate files said them.

A session that ran only some criteria (-k, -m, --deselect) cannot make a run ACCEPTED, and
editing a gate file after a GREEN session makes the verdict STALE.

Real pytest sessions on a synthetic engine-format run with a three-criterion gate file;
under xdist the workers do the deselecting, so their report must reach the controller.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from gate_helpers import make_run, set_log_cell

from pytest_mlgates.cli import compute_verdict
from pytest_mlgates.ledger import read_ledger

GATES = """title: three criteria
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: complete
    gate: log_complete
  - name: loss_falls
    check: "min(val_loss) < first(val_loss)"
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    run = make_run(tmp_path / "run")
    gates = tmp_path / "three.gates.yaml"
    gates.write_text(GATES)
    return run, gates


def session(run: Path, gates: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", str(gates), "--run-dir", str(run),
                           "-p", "no:cacheprovider", "--rootdir", str(gates.parent), *extra],
                          capture_output=True, text=True, timeout=300, check=False, cwd=gates.parent)


def entries(run: Path) -> list[dict]:  # type: ignore[type-arg]
    return read_ledger(run / "acceptance" / "ledger.jsonl").entries


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_a_partial_green_session_is_archived_as_partial_and_not_counted(
        setup: tuple[Path, Path], workers: list[str]) -> None:
    run, gates = setup
    proc = session(run, gates, "-k", "no_nan", *workers)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "partial: 2 criteria deselected" in proc.stdout
    [entry] = entries(run)
    assert entry["verdict"] == "GREEN" and entry["partial"] is True and entry["counts"]["deselected"] == 2
    verdict = compute_verdict(run)
    assert verdict["verdict"] == "UNCHECKED" and "only partial sessions" in verdict["reason"]

    assert session(run, gates, *workers).returncode == 0  # every criterion
    assert entries(run)[-1]["partial"] is False
    assert compute_verdict(run)["verdict"] == "ACCEPTED"
    session(run, gates, "-k", "complete", *workers)  # a later subset does not replace it
    verdict = compute_verdict(run)
    assert verdict["verdict"] == "ACCEPTED" and "1 later partial GREEN session not counted" in verdict["reason"]


def test_a_partial_red_session_counts(setup: tuple[Path, Path]) -> None:
    run, gates = setup
    assert session(run, gates).returncode == 0
    set_log_cell(run, "val_loss", 2, "nan")
    proc = session(run, gates, "-k", "no_nan")
    assert proc.returncode == 1
    verdict = compute_verdict(run)
    assert verdict["verdict"] == "REJECTED"
    assert "newest session is RED (a partial session: 2 criteria deselected" in verdict["reason"]


def test_the_deselect_option_makes_a_session_partial(setup: tuple[Path, Path]) -> None:
    run, gates = setup
    node = f"{gates.name}::complete"
    proc = session(run, gates, "--deselect", f"{node}[{run}]")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert entries(run)[-1]["counts"]["deselected"] == 1


@pytest.mark.slow
def test_editing_a_gate_file_after_a_green_session_makes_the_verdict_stale(setup: tuple[Path, Path]) -> None:
    run, gates = setup
    assert session(run, gates).returncode == 0
    assert entries(run)[-1]["gate_files"] == {gates.name: hashlib.sha256(gates.read_bytes()).hexdigest()}
    assert compute_verdict(run)["verdict"] == "ACCEPTED"
    original = gates.read_text()
    gates.write_text(original.replace("min(val_loss) < first(val_loss)", "min(val_loss) < 0"))
    verdict = compute_verdict(run)
    assert verdict["verdict"] == "STALE" and verdict["changes"] == {"gate file": [gates.name]}
    assert "gate files changed" in verdict["reason"]
    gates.write_text(original)
    assert compute_verdict(run)["verdict"] == "ACCEPTED"
    gates.unlink()  # checked from another checkout: nothing to compare, not STALE
    assert compute_verdict(run)["verdict"] == "ACCEPTED"
