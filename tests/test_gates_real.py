"""Every gate RED and GREEN on runs trained by the real engine (tiny: 3-4 epochs).

Runs come from the session-shared ``trained_run`` fixture (tests/conftest.py), so a run
another test file also asks for is trained once. Tests that break a run copy it first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMALL_OVERRIDES
from gate_helpers import run_gate, set_log_cell

pytestmark = pytest.mark.slow

ZERO_WEIGHT_3 = "train.class_weights=[1,1,1,0,1,1,1,1,1,1]"
STAMPS = ("train.progress_bar=false", "data.name=stamps", "data.imbalance=null", "data.split=group_holdout",
          "data.n_samples=400", "model.width=16", "train.epochs=4", "train.lr=0.01", "train.warmup_epochs=0",
          "gates.inflight=null")
SHORTCUT = (*STAMPS, "data.faults=[shortcut]")


@pytest.fixture(scope="module")
def default_run(trained_run) -> Path:  # type: ignore[no-untyped-def]
    return trained_run(SMALL_OVERRIDES)


@pytest.mark.parametrize("gate", [
    "finite_log", "log_complete", "best_checkpoints", "resume_point", "checkpoint_softmax", "reproduces",
    "provenance", "plots", "split_integrity", "suspicious_perfection", "memorization",
])
def test_default_run_is_green(default_run: Path, gate: str) -> None:
    r = run_gate(default_run, gate)
    assert r.passed, r.message


def test_default_run_key_link_and_artifact_green(default_run: Path) -> None:
    assert run_gate(default_run, "key_link", {"from": "checkpoints/best_val_loss.pt", "to": "src/model/train.py",
                                              "pattern": "save_checkpoint"}).passed
    assert run_gate(default_run, "artifact", {"path": "checkpoints/final.pt", "loads": "softmax"}).passed


def test_reproduces_red_when_the_logged_number_was_changed(default_run: Path, copy_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = copy_run(default_run, tmp_path / "run")
    from pytest_mlgates.rundir import open_run

    epoch = open_run(run).checkpoint("best_val_macro_f1")["epoch"]
    value = open_run(run).log.columns["val_macro_f1"][epoch - 1]
    set_log_cell(run, "val_macro_f1", epoch, repr(value + 0.05))
    r = run_gate(run, "reproduces", {"checkpoint": "best_val_macro_f1"})
    assert not r.passed
    assert f"val_macro_f1 re-evaluated from {run}/checkpoints/best_val_macro_f1.pt = {value:.3f}" in r.message


def test_deleted_best_checkpoint_is_red(default_run: Path, copy_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = copy_run(default_run, tmp_path / "run")
    (run / "checkpoints" / "best_val_min_recall.pt").unlink()
    r = run_gate(run, "best_checkpoints")
    assert not r.passed
    assert "checkpoints/best_val_min_recall.pt: not found; needs one best checkpoint per tracked metric" in r.message


def test_zero_class_weight_collapses_the_minority_class(trained_run) -> None:  # type: ignore[no-untyped-def]
    run = trained_run((*SMALL_OVERRIDES, ZERO_WEIGHT_3, "gates.inflight=null"))
    r = run_gate(run, "class_recall")
    assert not r.passed
    assert r.message.startswith("val_recall_3 = 0.000 at epoch 3 (final); needs > 0")
    assert run_gate(run, "class_recall", {"classes": ["0", "1"]}).passed


def test_nan_pixels_make_the_log_non_finite(trained_run) -> None:  # type: ignore[no-untyped-def]
    run = trained_run((*SMALL_OVERRIDES, "data.faults=[nan_pixels]", "train.epochs=2", "gates.inflight=null"))
    r = run_gate(run, "finite_log")
    assert not r.passed
    assert " = nan at epoch 1" in r.message


def test_leaked_groups_red_on_split_integrity_and_suspicious_perfection(trained_run) -> None:  # type: ignore[no-untyped-def]
    # smaller batches: more steps, so the copied val systems are learnt to perfection
    run = trained_run((*STAMPS, "train.batch_size=16", "data.faults=[leaked_groups]"))
    r = run_gate(run, "split_integrity")
    assert not r.passed and r.message.startswith("group ids in two splits = ")
    r = run_gate(run, "suspicious_perfection")
    assert not r.passed and " = 1.000 at epoch " in r.message


def test_honest_stamps_green_on_shortcut_and_splits(trained_run) -> None:  # type: ignore[no-untyped-def]
    run = trained_run(STAMPS)
    assert run_gate(run, "split_integrity").passed
    r = run_gate(run, "shortcut")
    assert r.passed and "no shortcut in the image core" in r.message


def test_shortcut_fault_is_red_and_core_dropout_turns_it_green(trained_run) -> None:  # type: ignore[no-untyped-def]
    r = run_gate(trained_run(SHORTCUT), "shortcut")
    assert not r.passed
    assert r.message.startswith("val AUROC drop with swapped cores = ")
    assert "the model reads the class from the image core" in r.message
    r = run_gate(trained_run((*SHORTCUT, "train.core_dropout.prob=0.5")), "shortcut")
    assert r.passed and "training hid the core" in r.message
