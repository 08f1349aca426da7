"""The wandb run format on real W&B offline runs (tests/trainers/wandb_run.py): the history
from the ``run-<id>.wandb`` record log (W&B 0.31 writes metrics only there offline), read
without the wandb or protobuf packages; checkpoints where the run: section says."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from trainer_sessions import (
    CRITERIA_BLOCK,
    EPOCHS,
    EXPECTED_RED,
    assert_green_and_red,
    make_runs,
    session,
)

from conftest import need_package

pytestmark = pytest.mark.slow

FAULTS = ("healthy", "collapsed", "nan", "no_best")
CRITERIA = ("no_nan", "log_complete", "every_class_learned", "best_checkpoint_per_metric", "val_loss_improves",
            "best_model_gives_a_softmax")
GATES = """\
title: W&B digits
run:
  format: wandb
  checkpoints: "files/*.pt"
  best: "files/best_{metric}.pt"
  tracked: [{metric: val_loss, mode: min}]
metrics:
  train_loss: train/loss
""" + CRITERIA_BLOCK + """\
  - name: best_model_gives_a_softmax
    gate: checkpoint_softmax
    checkpoint: best_val_loss
    model: "digits_model:DigitsMLP"
    input_shape: [16, 64]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need_package("wandb")
    return make_runs("wandb_run.py", tmp_path_factory, FAULTS)


def _run_folder(project: Path) -> Path:
    (folder,) = (project / "wandb").glob("offline-run-*")
    return folder


def test_wandb_runs_green_and_red_in_a_pytest_session(runs: dict[str, Path], pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import trainer_env

    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    found, output = session(pytester, GATES, {f: _run_folder(p) for f, p in runs.items()})
    assert_green_and_red(found, output, CRITERIA, FAULTS, EXPECTED_RED)


def test_wandb_run_found_below_its_project_folder(runs: dict[str, Path]) -> None:
    """--run-dir may name the folder wandb.init(dir=...) was given: its one offline run is
    read; the latest-run symlink and logs/ (an absolute symlink out) are not followed."""
    from pytest_mlgates.formats import open_run

    run = open_run(runs["healthy"])
    assert run.format == "wandb" and run.path == _run_folder(runs["healthy"])
    assert run.log.epochs == [float(e) for e in range(1, EPOCHS + 1)]
    assert {"train/loss", "val_loss", "val_min_recall"} <= set(run.log.columns)
    assert run.config is not None and run.config["fault"] == "healthy"
    assert run.results == {"status": "completed", "exit_code": 0}
    assert not (run.path / "files" / "wandb-summary.json").exists()  # offline 0.31: only the record log


def test_wandb_record_log_cut_mid_record_reads_as_running(runs: dict[str, Path], tmp_path: Path) -> None:
    """A run in progress leaves its last record cut off: the rows before it are read and
    the run says running; a flipped byte inside a complete record is one line."""
    from pytest_mlgates.errors import RunDirError
    from pytest_mlgates.formats import open_run

    copy = Path(shutil.copytree(_run_folder(runs["healthy"]), tmp_path / "live", symlinks=True))
    (log,) = copy.glob("run-*.wandb")
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])
    run = open_run(copy)
    assert run.results == {"status": "running"} and len(run.log) >= 1
    broken = bytearray(data)
    broken[200] ^= 0xFF
    log.write_bytes(bytes(broken))
    with pytest.raises(RunDirError) as err:
        _ = open_run(copy).log
    assert "corrupt record log" in str(err.value) and "\n" not in str(err.value)
