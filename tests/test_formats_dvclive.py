"""The dvclive run format on real DVCLive runs (tests/trainers/dvclive_run.py): the log
from ``dvclive/plots/metrics/**.tsv``, read without DVCLive; the checkpoints where the gate
file's run: section says (DVCLive keeps none)."""

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
title: DVCLive digits
run:
  format: dvclive
  checkpoints: "checkpoints/*.pt"
  best: "checkpoints/best_{metric}.pt"
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
    need_package("dvclive")
    return make_runs("dvclive_run.py", tmp_path_factory, FAULTS)


def test_dvclive_runs_green_and_red_in_a_pytest_session(runs: dict[str, Path], pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import trainer_env

    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])  # the gate file's model class
    found, output = session(pytester, GATES, runs)
    assert_green_and_red(found, output, CRITERIA, FAULTS, EXPECTED_RED)


def test_dvclive_run_detected_and_grouped_by_its_logged_epoch(runs: dict[str, Path]) -> None:
    from pytest_mlgates.formats import candidates, open_run

    assert [name for name, _ in candidates(runs["healthy"])] == ["dvclive"]
    run = open_run(runs["healthy"])
    assert run.log.epochs == [float(e) for e in range(1, EPOCHS + 1)]  # the logged epoch, not the step
    assert {"train/loss", "val_loss", "val_min_recall"} <= set(run.log.columns)
    assert run.config is not None and run.config["fault"] == "healthy"
    # the Live folder itself names the run as well
    assert open_run(runs["healthy"] / "dvclive").log.columns == run.log.columns


def test_truncated_dvclive_tsv_is_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    from pytest_mlgates.errors import RunDirError
    from pytest_mlgates.formats import open_run

    copy = Path(shutil.copytree(runs["healthy"], tmp_path / "cut"))
    tsv = copy / "dvclive" / "plots" / "metrics" / "val_loss.tsv"
    tsv.write_text(tsv.read_text()[:-3].rsplit("\t", 1)[0] + "\n")
    with pytest.raises(RunDirError) as err:
        _ = open_run(copy).log
    assert "val_loss.tsv" in str(err.value) and "\n" not in str(err.value)
