"""The project's own gate files against a real run of configs/default.yaml: all GREEN.

Trains the default config once per session (the shared ``trained_run`` cache), copies it
(the plugin's archive writes into the run dir), then runs ``pytest acceptance/ --run-dir``
in a subprocess exactly as a user would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LOAD_MODEL_TEST = """
import pytest
import torch

@pytest.mark.mlgates("best_val_loss_model_gives_a_softmax")
def test_best_model(run, load_model, gate_values):
    model = load_model("best_val_loss")
    assert not model.training
    x = torch.zeros((4, *run.checkpoint("best_val_loss")["input_shape"]))
    probs = torch.softmax(model(x), dim=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4), atol=1e-5)
    assert gate_values("len(epoch)") == len(run.log.columns["epoch"])
"""


@pytest.fixture(scope="module")
def default_run(trained_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import copy_run

    return copy_run(trained_run(), tmp_path_factory.mktemp("acceptance") / "default")


def run_acceptance(pytester: pytest.Pytester, run_dir: Path, *extra: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        str(REPO / "acceptance"), *extra, "--run-dir", str(run_dir), "--rootdir", str(REPO),
        "-p", "no:cacheprovider")


@pytest.mark.slow
def test_acceptance_gates_all_green_on_the_default_run(
    pytester: pytest.Pytester, default_run: Path
) -> None:
    pytester.makepyfile(test_python_acceptance=LOAD_MODEL_TEST)
    result = run_acceptance(pytester, default_run, str(pytester.path / "test_python_acceptance.py"))
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("skipped", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 30
    table = result.stdout.str().split("= mlgates =")[1]
    for name in ("finite_log", "log_complete", "converged", "checkpoint_softmax",
                 "best_checkpoints", "resume_point", "class_recall", "generalization_gap",
                 "suspicious_perfection", "provenance", "plots", "split_integrity", "reproduces",
                 "key_link:checkpoints/best_val_loss.pt->src/model/train.py",
                 "val_loss_decreases", "inflight_min_recall",
                 "best_val_loss_model_gives_a_softmax"):
        assert any(line.startswith(name) and line.rstrip().endswith("GREEN")
                   for line in table.splitlines()), name
    assert " 0 RED, 0 UNVERIFIED, 0 ERROR" in table


@pytest.mark.slow
def test_a_deleted_best_checkpoint_turns_its_criteria_red(
    pytester: pytest.Pytester, default_run: Path, tmp_path: Path
) -> None:
    broken = Path(shutil.copytree(default_run, tmp_path / "broken"))
    (broken / "checkpoints" / "best_val_min_recall.pt").unlink()
    result = run_acceptance(pytester, broken)
    red = sorted(line.split()[0] for line in result.stdout.str().split("= mlgates =")[1].splitlines()
                 if line.rstrip().endswith(" RED"))
    assert red == ["artifact:checkpoints/best_val_min_recall.pt", "best_checkpoints",
                   "inflight_best_checkpoints"]
    assert "Traceback" not in result.stdout.str()
