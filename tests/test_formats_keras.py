"""The keras run format on real Keras 3 runs (torch backend; tests/trainers/keras_run.py):
a CSVLogger file with its ``NA`` cells and ``.keras`` checkpoints, read without Keras."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from trainer_sessions import CRITERIA_BLOCK, EXPECTED_RED, assert_green_and_red, make_runs, session

from conftest import need_package

pytestmark = pytest.mark.slow

FAULTS = ("healthy", "collapsed", "nan", "no_best")
CRITERIA = ("no_nan", "log_complete", "every_class_learned", "best_checkpoint_per_metric", "val_loss_improves")
GATES = """\
title: Keras digits
run:
  format: keras
  log: training.log
  best: "best_{metric}.keras"
  tracked: [{metric: val_loss, mode: min}]
metrics:
  train_loss: loss
""" + CRITERIA_BLOCK


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need_package("keras")
    need_package("h5py")
    return make_runs("keras_run.py", tmp_path_factory, (*FAULTS, "noval"))


def test_keras_runs_green_and_red_in_a_pytest_session(runs: dict[str, Path], pytester: pytest.Pytester) -> None:
    found, output = session(pytester, GATES, {f: runs[f] for f in FAULTS})
    assert_green_and_red(found, output, CRITERIA, FAULTS, EXPECTED_RED)


def test_keras_run_detected_by_its_files_and_read(runs: dict[str, Path]) -> None:
    from gate_helpers import run_gate

    from pytest_mlgates.formats import candidates, open_run

    assert [name for name, _ in candidates(runs["healthy"])] == ["keras"]
    run = open_run(runs["healthy"])
    assert run.format == "keras" and run.log.epochs == [0.0, 1.0, 2.0]
    assert {"loss", "accuracy", "val_loss", "val_min_recall"} <= set(run.log.columns)
    weights = run.checkpoint("last")["state_dict"]
    layers = {k: t for k, t in weights.items() if k.startswith("layers/")}
    assert sorted(t.ndim for t in layers.values()) == [1, 1, 2, 2], sorted(weights)
    r = run_gate(runs["healthy"], "finite_log")
    assert r.passed, r.message


def test_keras_run_without_validation_is_not_a_nan(runs: dict[str, Path]) -> None:
    """No validation data: Keras writes its val_* columns as NA (or nan) in every epoch;
    they are left out, not called a NaN (keras-team/keras#21173)."""
    from gate_helpers import run_gate

    from pytest_mlgates.formats import open_run

    run = open_run(runs["noval"])
    assert "val_loss" not in run.log.columns and "loss" in run.log.columns
    text = (runs["noval"] / "training.log").read_text()
    assert ",NA" in text  # the file the real CSVLogger wrote has them
    r = run_gate(runs["noval"], "finite_log")
    assert r.passed, r.message


def test_keras_nan_weights_file_turns_checkpoint_finite_red(runs: dict[str, Path], tmp_path: Path) -> None:
    """The weights of last.keras of the NaN run are NaN: read from its HDF5 arrays."""
    import math

    from pytest_mlgates.formats import open_run

    copy = Path(shutil.copytree(runs["nan"], tmp_path / "nan"))
    weights = open_run(copy).checkpoint("last")["state_dict"]
    assert any(math.isnan(float(t.flatten()[0])) for t in weights.values())


def test_truncated_keras_file_is_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    from pytest_mlgates.errors import RunDirError
    from pytest_mlgates.formats import open_run

    copy = Path(shutil.copytree(runs["healthy"], tmp_path / "cut"))
    data = (copy / "last.keras").read_bytes()
    (copy / "last.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError) as err:
        open_run(copy).checkpoint("last")
    assert "last.keras" in str(err.value) and "\n" not in str(err.value)
