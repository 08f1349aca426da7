"""The timm run format on timm output folders (tests/trainers/timm_files.py).

timm cannot import in this venv (it imports torchvision, whose registry wheel is built for
CUDA torch and fails beside the CPU torch: ``operator torchvision::nms does not exist``),
so its files are written the way ``timm.utils.update_summary`` and ``CheckpointSaver``
write them, by a real training of the digits MLP: ``summary.csv``, ``args.yaml`` and
``*.pth.tar`` whose ``args`` is an ``argparse.Namespace``, which ``weights_only=True``
refuses and the reader loads with exactly that type allowed."""

from __future__ import annotations

import argparse
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
            "best_model_gives_a_softmax", "resumable")
GATES = """\
title: timm digits
metrics:
  val_loss: eval_loss
  val_recall_*: eval_recall_*
""" + CRITERIA_BLOCK + """\
  - name: best_model_gives_a_softmax
    gate: checkpoint_softmax
    checkpoint: best
    model: "digits_model:DigitsMLP"
    input_shape: [16, 64]
  - name: resumable
    gate: resume_point
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need_package("torch")
    return make_runs("timm_files.py", tmp_path_factory, FAULTS)


def test_timm_runs_green_and_red_in_a_pytest_session(runs: dict[str, Path], pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import trainer_env

    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    found, output = session(pytester, GATES, runs)
    assert_green_and_red(found, output, CRITERIA, FAULTS, EXPECTED_RED)


def test_timm_checkpoint_with_argparse_namespace_loads_with_exactly_that_allowed(runs: dict[str, Path]) -> None:
    import pickle

    import torch

    from pytest_mlgates.checkpoint_io import safe_torch_load
    from pytest_mlgates.formats import open_run

    best = runs["healthy"] / "model_best.pth.tar"
    with pytest.raises(pickle.UnpicklingError):  # what weights_only=True alone says
        torch.load(best, weights_only=True)
    assert isinstance(safe_torch_load(best)["args"], argparse.Namespace)
    run = open_run(runs["healthy"])
    assert run.format == "timm" and run.tracked == [("eval_loss", "min")]  # eval_metric: loss in args.yaml
    assert run.log.epochs == [float(e) for e in range(EPOCHS)]
    record = run.best_checkpoint("eval_loss", "min")
    assert record.problem is None and record.epoch == EPOCHS - 1, record


def test_timm_checkpoint_with_any_other_global_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    """Only the well-known harmless type is allowed: a checkpoint that also pickles a class
    of its own is refused in one line, never loaded with a blanket fallback."""
    import datetime

    import torch

    from pytest_mlgates.errors import RunDirError
    from pytest_mlgates.formats import open_run

    copy = Path(shutil.copytree(runs["healthy"], tmp_path / "evil"))
    ckpt = torch.load(copy / "model_best.pth.tar", weights_only=False)
    ckpt["extra"] = datetime.date(2026, 12, 7)  # a global that is not argparse.Namespace
    torch.save(ckpt, copy / "model_best.pth.tar")
    with pytest.raises(RunDirError) as err:
        open_run(copy).checkpoint("best")
    assert "datetime.date" in str(err.value) and "\n" not in str(err.value)


def test_prove_turns_every_criterion_of_a_timm_run_red(runs: dict[str, Path], tmp_path: Path) -> None:
    """``mlgates prove`` rewrites the ``.pth.tar`` files (NaN weights, optimizer dropped)
    with their ``argparse.Namespace`` kept, and every criterion turns RED."""
    import json
    import subprocess
    import sys

    from conftest import trainer_env

    copy = Path(shutil.copytree(runs["healthy"], tmp_path / "run"))
    (tmp_path / "t.gates.yaml").write_text(GATES, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "prove", str(copy), "--gates",
                           str(tmp_path / "t.gates.yaml"), "--json"], capture_output=True, text=True, timeout=300,
                          env=trainer_env(), cwd=tmp_path, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    report = json.loads(proc.stdout)
    assert sorted(report["proven"]) == sorted(CRITERIA), json.dumps(report["criteria"], indent=1)[-4000:]
    assert report["defects"] == report["no_mutation"] == report["mutation_failed"] == []
    by_name = {c["criterion"]: c for c in report["criteria"]}
    assert by_name["best_model_gives_a_softmax"]["mutation"] == "model weights of model_best.pth.tar set to NaN"
    assert by_name["resumable"]["mutation"] == "optimizer state removed from last.pth.tar"
