"""In-flight gates on real training: `python -m model train` stops a doomed run early.

Each test trains the default digits config for a few epochs in a subprocess, with
`gates.inflight` pointing at a gate file written here, and reads the run dir the engine
left: status, reason, exit code, and a loadable `last.pt`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "default.yaml"
EXIT_GATE = 3


def train(tmp_path: Path, gates_text: str, *overrides: str, epochs: int = 2) -> tuple[subprocess.CompletedProcess[str], Path]:
    gates = tmp_path / "inflight.gates.yaml"
    gates.write_text(textwrap.dedent(gates_text), encoding="utf-8")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "model", "train", "--config", str(CONFIG), "--run-dir", str(run_dir), "--fresh",
           "--override", f"train.epochs={epochs}", "--override", "train.progress_bar=false",
           "--override", f"gates.inflight={gates}", "--override", "gates.after_epoch=1"]
    for override in overrides:
        cmd += ["--override", override]
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc, run_dir


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "training_results.json").read_text(encoding="utf-8"))


def last_epoch(run_dir: Path) -> int:
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return int(ckpt["epoch"])


@pytest.mark.slow
def test_missing_best_checkpoint_dies_in_the_first_epoch(tmp_path: Path) -> None:
    # the config tracks val_loss, val_macro_f1, val_min_recall; the gate file wants val_auroc too
    proc, run_dir = train(tmp_path, """
        exit_criteria:
          - name: every_best_checkpoint
            stage: inflight
            gate: best_checkpoints
            metrics: [val_loss, val_auroc]
          - name: acceptance_only
            check: "final.val_accuracy > 0.99"
        """, epochs=3)
    assert proc.returncode == EXIT_GATE, proc.stderr
    res = results(run_dir)
    assert res["status"] == "aborted_by_gate"
    assert res["epochs_completed"] == 1
    assert res["reason"].startswith("criterion every_best_checkpoint: ")
    assert "best_val_auroc.pt" in res["reason"] and "val_auroc" in res["reason"]
    assert last_epoch(run_dir) == 1  # the resume point of the aborted run is intact


@pytest.mark.slow
def test_collapsed_minority_recall_is_stopped_at_epoch_two(tmp_path: Path) -> None:
    # class 3 is thinned to 10% in train and weighted 0: its recall collapses to 0
    proc, run_dir = train(tmp_path, """
        exit_criteria:
          - name: minority_not_collapsed
            check: "len(epoch) < 2 or final.val_recall_3 > 0"
        """, "train.class_weights=[1, 1, 1, 0, 1, 1, 1, 1, 1, 1]", epochs=4)
    assert proc.returncode == EXIT_GATE, proc.stderr
    res = results(run_dir)
    assert res["status"] == "aborted_by_gate"
    assert res["epochs_completed"] == 2
    assert res["reason"].startswith("criterion minority_not_collapsed: ")
    assert "val_recall_3 = 0.000 at epoch 2" in res["reason"]
    assert last_epoch(run_dir) == 2
    assert "in-flight gate RED after epoch 2" in (run_dir / "train.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_healthy_run_is_never_aborted(tmp_path: Path) -> None:
    proc, run_dir = train(tmp_path, """
        exit_criteria:
          - name: every_best_checkpoint
            gate: best_checkpoints
          - name: no_nan
            gate: finite_log
          - name: learning
            check: "max(val_accuracy) > 0.2"
          - name: minority_recovers_by_epoch_three
            check: "len(epoch) < 3 or final.val_recall_3 > 0"
          - name: only_before_training
            stage: preflight
            check: "final.val_accuracy > 0.999"
        """, epochs=3)
    assert proc.returncode == 0, proc.stderr
    res = results(run_dir)
    assert res["status"] == "completed"
    assert res["epochs_completed"] == 3


@pytest.mark.slow  # a `python -m model train` process: torch's import alone is seconds
def test_broken_gate_file_stops_before_training(tmp_path: Path) -> None:
    proc, run_dir = train(tmp_path, """
        exit_criteria:
          - name: bad
            check: "final.val_loss <"
        """)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: gates.inflight: ") and "inflight.gates.yaml" in line, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "checkpoints" / "last.pt").exists()


def test_gates_judge_with_the_plugin_gate_code(tmp_path: Path) -> None:
    """Gates on a hand-written run dir: RED names the criterion and the value and is
    recorded in mlgates_inflight.json; a criterion that cannot be judged yet (epoch[3]
    after two epochs) does not stop it; epochs before after_epoch are not judged."""
    from pytest_mlgates.inflight import INFLIGHT_FILE, Gates, InflightGateWarning

    run = tmp_path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text("epoch,train_loss,val_loss\n1,2.0,1.5\n2,1.0,1.8\n", encoding="utf-8")
    gate_file = tmp_path / "g.gates.yaml"
    gate_file.write_text(textwrap.dedent("""
        exit_criteria:
          - name: later
            stage: inflight
            check: "epoch[3].val_loss < 5"
          - name: improving
            stage: inflight
            check: "last(val_loss) <= min(val_loss)"
          - name: not_inflight
            check: "final.val_loss < 0"
        """), encoding="utf-8")
    gates = Gates(gate_file, run, after_epoch=2)
    early = gates.check(1)
    assert not early.red and not early.checked and bool(early)
    assert not (run / INFLIGHT_FILE).exists()
    with pytest.warns(InflightGateWarning, match="criterion later not judged"):
        verdict = gates.check(2)
    assert verdict.red and not verdict and verdict.criterion == "improving"
    assert verdict.reason is not None and verdict.reason.startswith("criterion improving: ")
    assert "1.8" in verdict.reason
    record = json.loads((run / INFLIGHT_FILE).read_text(encoding="utf-8"))
    assert record["status"] == "aborted_by_gate" and record["criterion"] == "improving"
    assert record["epoch"] == 2 and record["reason"] == verdict.reason


def test_gates_refuse_a_bad_after_epoch_and_a_missing_file(tmp_path: Path) -> None:
    from pytest_mlgates.errors import GateFileError
    from pytest_mlgates.inflight import Gates

    with pytest.raises(GateFileError, match="not found"):
        Gates(tmp_path / "nope.gates.yaml", tmp_path)
    gate_file = tmp_path / "g.gates.yaml"
    gate_file.write_text("exit_criteria:\n  - {name: a, check: 'final.val_loss < 1'}\n", encoding="utf-8")
    with pytest.raises(GateFileError, match="after_epoch must be a whole number"):
        Gates(gate_file, tmp_path, after_epoch=0)


@pytest.mark.slow
def test_a_resumed_run_checks_its_last_epoch_before_training_more(tmp_path: Path) -> None:
    """A kill between an epoch's files and its gate check leaves a run whose last epoch was
    never checked; the resume checks it first. Simulated: the gate file turns RED for the
    two epochs on disk between the run and its resume."""
    passing = """
        exit_criteria:
          - name: at_most_one_epoch
            check: "len(epoch) < 9"
        """
    proc, run_dir = train(tmp_path, passing, epochs=2)
    assert proc.returncode == 0, proc.stderr
    # what a kill leaves: the results still say running
    res = results(run_dir)
    res["status"] = "running"
    (run_dir / "training_results.json").write_text(json.dumps(res), encoding="utf-8")
    gates = tmp_path / "inflight.gates.yaml"
    gates.write_text(textwrap.dedent(passing).replace("< 9", "< 2"), encoding="utf-8")
    cmd = [sys.executable, "-m", "model", "train", "--config", str(CONFIG), "--run-dir", str(run_dir),
           "--override", "train.epochs=4", "--override", "train.progress_bar=false",
           "--override", f"gates.inflight={gates}", "--override", "gates.after_epoch=1"]
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == EXIT_GATE, proc.stderr
    res = results(run_dir)
    assert res["status"] == "aborted_by_gate" and res["epochs_completed"] == 2
    assert res["reason"].startswith("criterion at_most_one_epoch: ")
    assert last_epoch(run_dir) == 2
    assert "in-flight gate RED after epoch 2 (checked on resume)" in (run_dir / "train.log").read_text(encoding="utf-8")


def test_acceptance_names_a_stop_an_inflight_gate_recorded(pytester: pytest.Pytester) -> None:
    """A run an in-flight gate stopped is reported as such by the acceptance session, even
    when what is left of it passes the criteria at hand."""
    from pytest_mlgates.inflight import Gates

    run = pytester.path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text("epoch,train_loss,val_loss\n1,2.0,1.5\n2,1.0,1.8\n", encoding="utf-8")
    (pytester.path / "inflight.gates.yaml").write_text(
        "exit_criteria:\n  - {name: improving, check: 'last(val_loss) <= min(val_loss)'}\n", encoding="utf-8")
    (pytester.path / "ok.gates.yaml").write_text(
        "exit_criteria:\n  - {name: some_rows, check: 'len(epoch) > 1'}\n", encoding="utf-8")
    assert Gates(pytester.path / "inflight.gates.yaml", run).check(2).red
    result = pytester.runpytest("ok.gates.yaml", "--run-dir", "run", "-p", "no:cacheprovider",
                                "--mlgates-archive=off")
    result.assert_outcomes(passed=1)
    line = "run: stopped by an in-flight gate after epoch 2 (run/mlgates_inflight.json): criterion improving: *"
    result.stdout.fnmatch_lines([line])


def test_a_fifo_or_a_symlink_in_place_of_the_stop_record_is_no_stop(tmp_path: Path) -> None:
    """Read by every verdict: a FIFO must not hang it, a symlink must not lead out."""
    from pytest_mlgates.inflight import INFLIGHT_FILE, read_inflight_stop

    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"status": "aborted_by_gate", "criterion": "x"}), encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    (run / INFLIGHT_FILE).symlink_to(outside)
    assert read_inflight_stop(run) is None
    (run / INFLIGHT_FILE).unlink()
    os.mkfifo(run / INFLIGHT_FILE)
    assert read_inflight_stop(run) is None  # returns at once: nothing writes to the FIFO
    (run / INFLIGHT_FILE).unlink()
    (run / INFLIGHT_FILE).write_text(outside.read_text(encoding="utf-8"), encoding="utf-8")
    assert read_inflight_stop(run) == {"status": "aborted_by_gate", "criterion": "x"}
