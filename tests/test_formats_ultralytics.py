"""The ultralytics run format on Ultralytics classify folders (tests/trainers/ultralytics_files.py).

Ultralytics cannot import in this venv (it imports torchvision, whose registry wheel is
built for CUDA torch and fails beside the CPU torch), so its files are written the way
``BaseTrainer.save_metrics`` and ``save_model`` write them, by a real training of the
digits MLP: ``results.csv``, ``args.yaml``, ``weights/best.pt`` and ``last.pt`` pickling the
whole model (their weights passed through ``nan_to_num_``, as Ultralytics saves them).
The weights files are never opened: NaN comes from ``results.csv``."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_sessions import EPOCHS, assert_green_and_red, make_runs, session

from conftest import need_package

pytestmark = pytest.mark.slow

FAULTS = ("healthy", "nan", "no_best", "stopped")
CRITERIA = ("no_nan", "log_complete", "best_checkpoint", "val_loss_improves", "top1_above_chance")
GATES = """\
title: Ultralytics classify digits
metrics:
  train_loss: train/loss
  val_loss: val/loss
  top1: metrics/accuracy_top1
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: log_complete
    gate: log_complete
  - name: best_checkpoint
    gate: best_checkpoints
  - name: val_loss_improves
    gate: converged
    metric: val_loss
    min_improvement: 0.1
  - name: top1_above_chance
    check: "max(top1) > 0.5"
"""
EXPECTED_RED = {"nan": [("no_nan", r"loss = nan at epoch 3")], "no_best": [("best_checkpoint", r"best.pt: not found")],
                "stopped": [("log_complete", (r"last.pt: epoch = 2 with its optimizer state, so training stopped "
                                             r"before its end"))]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need_package("torch")
    return make_runs("ultralytics_files.py", tmp_path_factory, FAULTS)


def test_ultralytics_runs_green_and_red_in_a_pytest_session(runs: dict[str, Path], pytester: pytest.Pytester) -> None:
    found, output = session(pytester, GATES, runs)
    assert_green_and_red(found, output, CRITERIA, FAULTS, EXPECTED_RED)


def test_ultralytics_weights_are_never_unpickled(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every gate that would open weights/best.pt says why not in one line and names the
    safe export; torch.load is never called on it."""
    import torch
    from gate_helpers import run_gate

    from pytest_mlgates.errors import RunDirError
    from pytest_mlgates.formats import open_run

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"torch.load called on {args[0]}")

    monkeypatch.setattr(torch, "load", refuse)
    run = open_run(runs["healthy"])
    assert run.format == "ultralytics" and run.log.epochs == [float(e) for e in range(1, EPOCHS + 1)]
    assert run.tracked == [("metrics/accuracy_top1", "max")]
    r = run_gate(runs["healthy"], "best_checkpoints")
    assert r.passed and "never opened" in r.message, r.message
    # the plugin reports a RunDirError as the item's one-line failure
    with pytest.raises(RunDirError) as err:
        run_gate(runs["healthy"], "checkpoint_softmax", {"checkpoint": "best", "model": "digits_model:DigitsMLP",
                                                         "input_shape": [4, 64]})
    assert "pickles the whole model" in str(err.value) and "state_dict" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(RunDirError) as err:
        run_gate(runs["healthy"], "resume_point")
    assert "last.pt" in str(err.value) and "never opened" in str(err.value)
    # whether training finished is read from last.pt's pickle opcodes, with torch.load refused
    aliases = {"train_loss": "train/loss", "val_loss": "val/loss"}
    assert run_gate(runs["healthy"], "log_complete", aliases=aliases).passed
    stopped = run_gate(runs["stopped"], "log_complete", aliases=aliases)
    assert not stopped.passed and "epoch = 2 with its optimizer state" in stopped.message, stopped.message


def test_ultralytics_nan_shows_in_results_csv_only(runs: dict[str, Path]) -> None:
    """Ultralytics replaces NaN weights with numbers when it saves; results.csv keeps the NaN."""
    import math

    from pytest_mlgates.formats import open_run

    run = open_run(runs["nan"])
    assert math.isnan(run.log.columns["val/loss"][-1])
