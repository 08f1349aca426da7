"""timm and Ultralytics, trained for real by the libraries themselves.

They import torchvision, which has no registry build for this venv's CPU torch, so their
runs are trained in a venv of their own (``vision_python`` in tests/conftest.py: a torch /
torchvision pair built for each other) and judged here, by the plugin in this venv, in real
pytest sessions -- as a user's CI would judge a run dir another job trained.

* timm: ``tests/trainers/timm_run.py`` -- the digits MLP, with timm's own
  ``update_summary`` and ``CheckpointSaver`` writing summary.csv and the ``*.pth.tar``
  files (whose ``args`` is the ``argparse.Namespace`` ``weights_only=True`` refuses);
* Ultralytics: ``tests/trainers/ultralytics_run.py`` -- ``YOLO("yolo11n-cls.yaml").train``
  on the digits as PNG folders, offline, integrations off.

The file-format tests (test_formats_timm.py, test_formats_ultralytics.py) and the broken and
hostile corpora use folders written the way these libraries write them, in this venv.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
from test_formats_timm import CRITERIA as TIMM_CRITERIA
from test_formats_timm import FAULTS as TIMM_FAULTS
from test_formats_timm import GATES as TIMM_GATES
from test_formats_ultralytics import GATES as ULTRALYTICS_GATES
from trainer_sessions import EXPECTED_RED, assert_green_and_red, make_runs, session

from conftest import trainer_env

pytestmark = pytest.mark.slow

ULTRALYTICS_FAULTS = ("healthy", "no_best", "nan")
ULTRALYTICS_CRITERIA = ("no_nan", "log_complete", "best_checkpoint", "val_loss_improves", "top1_above_chance")


def _vision_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The trainer scripts' environment, with Ultralytics kept to its run dir: its settings
    file in a temp dir, nothing downloaded."""
    config = tmp_path_factory.mktemp("ultralytics-config")
    return {**trainer_env(), "YOLO_CONFIG_DIR": str(config), "YOLO_OFFLINE": "1"}


@pytest.fixture(scope="module")
def timm_runs(vision_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_runs("timm_run.py", tmp_path_factory, TIMM_FAULTS, python=vision_python,
                     env=_vision_env(tmp_path_factory))


@pytest.fixture(scope="module")
def ultralytics_runs(vision_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_runs("ultralytics_run.py", tmp_path_factory, ULTRALYTICS_FAULTS, python=vision_python,
                     env=_vision_env(tmp_path_factory))


def test_real_timm_runs_green_and_red_in_a_pytest_session(timm_runs: dict[str, Path], pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    found, output = session(pytester, TIMM_GATES, timm_runs)
    assert_green_and_red(found, output, TIMM_CRITERIA, TIMM_FAULTS, EXPECTED_RED)


def test_a_real_timm_checkpoint_loads_with_only_argparse_namespace_allowed(timm_runs: dict[str, Path]) -> None:
    """timm's CheckpointSaver pickles train.py's Namespace (and, since timm 1.0.2x, its own
    bookkeeping under ``saver``): the reader loads it with exactly that type allowed."""
    import torch

    from pytest_mlgates.formats import open_run

    path = timm_runs["healthy"] / "model_best.pth.tar"
    with pytest.raises(Exception, match="argparse.Namespace"):
        torch.load(path, weights_only=True)
    run = open_run(timm_runs["healthy"])
    ckpt = run.checkpoint("best")
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].eval_metric == "loss"
    assert "state_dict" in ckpt and "saver" in ckpt
    record = run.best_checkpoint("eval_loss", "min")
    assert record.problem is None and record.value == pytest.approx(min(run.log.columns["eval_loss"]))


def test_real_ultralytics_runs_green_and_red_in_a_pytest_session(ultralytics_runs: dict[str, Path],
                                                                 pytester: pytest.Pytester) -> None:
    found, output = session(pytester, ULTRALYTICS_GATES, ultralytics_runs)
    # the NaN run stopped itself after one epoch (its NaN recovery gave up): its log is RED as
    # incomplete, and one epoch cannot show val_loss improving
    expected = {"no_best": [("best_checkpoint", r"best.pt: not found")],
                "nan": [("log_complete", (r"last.pt: epoch = 0 with its optimizer state, so training stopped before "
                                         r"its end .*results.csv has 1 epoch, args.yaml plans 3")),
                        ("val_loss_improves", r"val_loss improvement = 0.0%")]}
    assert_green_and_red(found, output, ULTRALYTICS_CRITERIA, ULTRALYTICS_FAULTS, expected)
    assert found[("no_nan", "nan")] == "PASSED"  # Ultralytics never writes the NaN to results.csv


def test_real_ultralytics_weights_are_never_unpickled(ultralytics_runs: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The real best.pt pickles the whole model: the gates say so in one line, torch.load
    is never called on it."""
    import torch
    from gate_helpers import run_gate

    from pytest_mlgates.errors import RunDirError

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"torch.load called on {args[0]}")

    monkeypatch.setattr(torch, "load", refuse)
    r = run_gate(ultralytics_runs["healthy"], "best_checkpoints")
    assert r.passed and "never opened" in r.message, r.message
    with pytest.raises(RunDirError) as err:
        run_gate(ultralytics_runs["healthy"], "checkpoint_softmax",
                 {"checkpoint": "best", "model": "digits_model:DigitsMLP", "input_shape": [4, 64]})
    assert "pickles the whole model" in str(err.value) and "\n" not in str(err.value)


def test_a_real_ultralytics_run_stopped_by_nan_is_an_incomplete_log(ultralytics_runs: dict[str, Path]) -> None:
    from gate_helpers import run_gate

    from pytest_mlgates.formats import open_run

    run = open_run(ultralytics_runs["nan"])
    assert all(math.isfinite(v) for v in run.log.columns["val/loss"])  # the NaN never reaches results.csv
    aliases = {"train_loss": "train/loss", "val_loss": "val/loss"}  # as ULTRALYTICS_GATES maps them
    assert run_gate(ultralytics_runs["healthy"], "log_complete", aliases=aliases).passed
    stopped = run_gate(ultralytics_runs["nan"], "log_complete", aliases=aliases)
    # Ultralytics 8.4 recovers from a NaN loss by reloading last.pt and, after 3 tries, stops
    # with an error: results.csv keeps only the epochs before, and last.pt is never stripped
    assert not stopped.passed and "with its optimizer state, so training stopped before its end" in stopped.message, \
        stopped.message
