"""Log gates, each RED and GREEN on synthetic run dirs written like the engine's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from gate_helpers import BASE_LOG, make_run, run_gate, set_log_cell

from pytest_mlgates.errors import GateFailure, MlgatesError, RunDirError

NAN = float("nan")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("good") / "run")


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "run"))


# --------------------------------------------------------------------------- finite_log


def test_finite_log_green(good: Path) -> None:
    r = run_gate(good, "finite_log")
    assert r.passed and r.value == "all finite"


def test_finite_log_red_names_column_and_first_bad_epoch(copy: Path) -> None:
    set_log_cell(copy, "val_loss", 4, "nan")
    set_log_cell(copy, "train_loss", 5, "inf")
    r = run_gate(copy, "finite_log")
    assert not r.passed
    assert r.message == "val_loss = nan at epoch 4; needs finite (2 columns non-finite)"
    assert r.value == "nan at epoch 4"


def test_finite_log_columns_limits_the_check(copy: Path) -> None:
    set_log_cell(copy, "lr", 2, "nan")
    assert not run_gate(copy, "finite_log").passed
    assert run_gate(copy, "finite_log", {"columns": ["val_*", "train_loss"]}).passed
    with pytest.raises(GateFailure, match="no column matches 'val_dice'"):
        run_gate(copy, "finite_log", {"columns": "val_dice"})


# --------------------------------------------------------------------------- log_complete


def test_log_complete_green(good: Path) -> None:
    r = run_gate(good, "log_complete")
    assert r.passed, r.message
    assert r.value == "5 epochs"


def test_log_complete_missing_recall_column(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", drop_columns=["val_recall_benign"], checkpoints=False)
    r = run_gate(d, "log_complete")
    assert not r.passed and "missing column val_recall_benign" in r.message


def test_log_complete_duplicate_and_missing_epochs(tmp_path: Path) -> None:
    d = make_run(tmp_path / "dup", values={"epoch": [1, 2, 2, 4, 5]}, checkpoints=False)
    assert "epoch 2 appears twice" in run_gate(d, "log_complete").message
    d = make_run(tmp_path / "gap", values={"epoch": [1, 2, 4, 5, 6]}, checkpoints=False)
    r = run_gate(d, "log_complete")
    assert not r.passed and "epoch 3 missing" in r.message


def test_log_complete_rows_disagree_with_results(copy: Path) -> None:
    lines = (copy / "training_log.csv").read_text().splitlines()
    (copy / "training_log.csv").write_text("\n".join(lines[:-1]) + "\n")
    r = run_gate(copy, "log_complete")
    assert not r.passed and "4 rows but training_results.json says epochs_completed = 5" in r.message


def test_log_complete_metric_history_disagrees(copy: Path) -> None:
    path = copy / "training_log.csv"
    path.write_text(path.read_text().replace("0.45", "0.44", 1))
    r = run_gate(copy, "log_complete")
    assert not r.passed
    assert "metric_history.json: val_loss at epoch 3 is 0.450, " in r.message


def test_log_complete_empty_cell(copy: Path) -> None:
    set_log_cell(copy, "val_auroc", 2, "")
    r = run_gate(copy, "log_complete")
    assert not r.passed and "empty cell in column val_auroc at epoch 2" in r.message


# --------------------------------------------------------------------------- converged


def test_converged_green_and_red(tmp_path: Path, good: Path) -> None:
    r = run_gate(good, "converged")
    assert r.passed and r.value == "34.8%"  # 0.69 -> 0.45
    flat = make_run(tmp_path / "flat", values={"val_loss": [0.69, 0.68, 0.67, 0.66, 0.65]}, checkpoints=False)
    r = run_gate(flat, "converged")
    assert not r.passed
    assert r.message == ("val_loss improvement = 5.8% (0.690 at epoch 1 -> 0.650 at epoch 5, min); "
                         "needs >= 10% improvement")


def test_converged_max_mode_is_the_default_for_non_losses(good: Path) -> None:
    r = run_gate(good, "converged", {"metric": "val_macro_f1", "min_improvement": 0.5})
    assert r.passed and r.value == "50.9%"  # 0.55 -> 0.83
    assert not run_gate(good, "converged", {"metric": "val_macro_f1", "min_improvement": 0.6}).passed


# --------------------------------------------------------------------------- class_recall


def test_class_recall_red_with_the_spec_message(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", values={"val_recall_malignant": [0.5, 0.3, 0.0, 0.0, 0.0]}, checkpoints=False)
    r = run_gate(d, "class_recall")
    assert not r.passed
    assert r.message == "val_recall_malignant = 0.000 at epoch 5 (final); needs > 0"
    assert (r.value, r.threshold) == ("0.000", "> 0")


def test_class_recall_green_floor_classes_and_at(good: Path) -> None:
    assert run_gate(good, "class_recall").passed
    assert not run_gate(good, "class_recall", {"floor": 0.85}).passed
    assert run_gate(good, "class_recall", {"floor": 0.85, "classes": ["benign"]}).passed
    r = run_gate(good, "class_recall", {"floor": 0.6, "at": "all"})
    assert not r.passed and r.message == "val_recall_malignant = 0.500 at epoch 1; needs > 0.6"
    r = run_gate(good, "class_recall", {"floor": 0.8, "at": "best"})
    assert not r.passed
    assert r.message == "val_recall_malignant = 0.800 at epoch 3 (best val_loss); needs > 0.8"
    with pytest.raises(GateFailure, match="no column val_recall_cat"):
        run_gate(good, "class_recall", {"classes": ["cat"]})


def test_class_recall_nan_is_red(copy: Path) -> None:
    set_log_cell(copy, "val_recall_benign", 5, "nan")
    r = run_gate(copy, "class_recall")
    assert not r.passed and r.message.startswith("val_recall_benign = nan at epoch 5")


# --------------------------------------------------------------------------- generalization_gap


def test_generalization_gap(tmp_path: Path, good: Path) -> None:
    r = run_gate(good, "generalization_gap")
    assert r.passed and r.value == "0.060"
    d = make_run(tmp_path / "r", values={"train_accuracy": [0.6, 0.8, 0.9, 1.0, 1.0]}, checkpoints=False)
    r = run_gate(d, "generalization_gap")
    assert not r.passed
    assert r.message == ("train_accuracy - val_accuracy = 0.160 at epoch 5 (final) (1.000 vs 0.840); "
                         "needs <= 0.1")
    r = run_gate(good, "generalization_gap", {"train": "train_loss", "val": "val_loss", "max_gap": 0.1})
    assert not r.passed and r.message.startswith("val_loss - train_loss = 0.160")


# --------------------------------------------------------------------------- memorization


def test_memorization_red_when_val_rises_while_train_falls(tmp_path: Path, good: Path) -> None:
    assert run_gate(good, "memorization").passed
    d = make_run(tmp_path / "r", values={"train_loss": [0.7, 0.4, 0.1, 0.01, 0.001],
                                         "val_loss": [0.7, 0.3, 0.35, 0.45, 0.555]}, checkpoints=False)
    r = run_gate(d, "memorization")
    assert not r.passed
    assert r.message == ("val_loss rose 85% from its minimum at epoch 2 (0.300 -> 0.555 at epoch 5) "
                         "while train_loss fell to 0.001; needs a rise <= 50%")
    assert run_gate(d, "memorization", {"max_rise": 0.9}).passed


def test_memorization_red_on_perfect_train_accuracy_with_a_gap(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", values={"train_accuracy": [0.7, 0.9, 1.0, 1.0, 1.0],
                                         "val_accuracy": [0.6, 0.62, 0.6, 0.61, 0.62]}, checkpoints=False)
    r = run_gate(d, "memorization")
    assert not r.passed
    assert "train_accuracy = 1.000 while val_accuracy = 0.620 at epoch 5 (final)" in r.message


# --------------------------------------------------------------------------- suspicious_perfection


def test_suspicious_perfection(tmp_path: Path, good: Path) -> None:
    r = run_gate(good, "suspicious_perfection")
    assert r.passed and r.value == "0.910"
    d = make_run(tmp_path / "r", values={"val_auroc": [0.9, 1.0, 0.99, 0.99, 0.99]}, checkpoints=False)
    r = run_gate(d, "suspicious_perfection", {"samples": 400})
    assert not r.passed
    assert r.message.startswith("val_auroc = 1.000 at epoch 2 on 400 samples (samples: in the gate file); "
                                "needs < 1 (a model right 99% of the time scores that with probability 0.018, "
                                "below 0.05: leaked data or a shortcut?)"), r.message
    assert run_gate(d, "suspicious_perfection", {"metrics": ["val_accuracy"], "samples": 400}).passed
    assert not run_gate(good, "suspicious_perfection", {"at": 0.9, "samples": 1000}).passed


def test_suspicious_perfection_finds_renamed_columns(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", values={"val_balanced_acc": [0.5, 0.7, 1.0, 0.9, 0.9]}, checkpoints=False)
    r = run_gate(d, "suspicious_perfection", {"samples": 500})
    assert not r.passed and r.message.startswith("val_balanced_acc = 1.000 at epoch 3")


def test_suspicious_perfection_weighs_the_samples_of_splits_json(tmp_path: Path) -> None:
    """issue 17: an honest load_wine split of 54 validation samples scoring 1.000 is no leak:
    a model right 99% of the time scores that with probability 0.99 ** 54 = 0.58 (it was RED).
    The count comes from the run's splits.json."""
    import json

    d = make_run(tmp_path / "r", values={"val_accuracy": [0.9, 0.96, 1.0, 1.0, 1.0]}, checkpoints=False)
    splits = {"train": list(range(100)), "val": list(range(100, 154)), "test": list(range(154, 178))}
    (d / "splits.json").write_text(json.dumps(splits))
    r = run_gate(d, "suspicious_perfection", {"metrics": ["val_accuracy"]})
    assert r.passed, r.message
    assert r.message == ("val_accuracy = 1.000 at epoch 3 on 54 samples ('val' of splits.json): a model right 99% "
                         "of the time scores that with probability 0.58 (>= 0.05), so not called a leak; RED from "
                         "299 samples")
    splits["val"] = list(range(100, 400))
    (d / "splits.json").write_text(json.dumps(splits))
    r = run_gate(d, "suspicious_perfection", {"metrics": ["val_accuracy"]})
    assert not r.passed and "on 300 samples ('val' of splits.json)" in r.message and "0.049" in r.message
    # a stricter honest model: 95% right scores 1.0 on 54 samples with probability 0.063; on 60, 0.046
    assert run_gate(d, "suspicious_perfection", {"metrics": ["val_accuracy"], "samples": 54, "honest": 0.95}).passed
    assert not run_gate(d, "suspicious_perfection", {"metrics": ["val_accuracy"], "samples": 60,
                                                     "honest": 0.95}).passed


def test_suspicious_perfection_takes_the_count_from_the_log(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", values={"val_accuracy": [0.9, 0.96, 1.0, 1.0, 1.0],
                                         "val_samples": [500] * 5}, checkpoints=False)
    r = run_gate(d, "suspicious_perfection", {"metrics": ["val_accuracy"]})
    assert not r.passed and "on 500 samples (val_samples in " in r.message, r.message
    hf = make_run(tmp_path / "hf", values={"eval_accuracy": [0.9, 1.0, 1.0, 1.0, 1.0],
                                           "eval_samples": [40] * 5}, checkpoints=False)
    r = run_gate(hf, "suspicious_perfection", {"metrics": ["eval_accuracy"]})
    assert r.passed and "on 40 samples (eval_samples in " in r.message, r.message


def test_suspicious_perfection_says_when_the_count_is_unknown(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", values={"val_accuracy": [0.9, 0.96, 1.0, 1.0, 1.0]}, checkpoints=False)
    (d / "splits.json").unlink()
    r = run_gate(d, "suspicious_perfection", {"metrics": ["val_accuracy"]})
    assert not r.passed
    assert r.message == ("val_accuracy = 1.000 at epoch 3; needs < 1 (a perfect val score usually means leaked data "
                         "or a shortcut; the number of samples behind it is unknown, so it is not weighed: give "
                         "samples: N or log val_samples)")


@pytest.mark.parametrize("params", [{"honest": 1.0}, {"confidence": 0}, {"samples": 0}, {"samples": 2.5}])
def test_suspicious_perfection_refuses_bad_parameters(params: dict[str, Any]) -> None:
    from pytest_mlgates.errors import MlgatesError
    from pytest_mlgates.gates import validate_params

    with pytest.raises(MlgatesError, match="gate suspicious_perfection: parameter"):
        validate_params("suspicious_perfection", params)


# --------------------------------------------------------------------------- baseline


def test_baseline(tmp_path: Path, good: Path) -> None:
    worse = make_run(tmp_path / "worse", values={"val_macro_f1": [0.5, 0.6, 0.7, 0.75, 0.78]}, checkpoints=False)
    r = run_gate(good, "baseline", baseline=good)
    assert r.passed
    r = run_gate(worse, "baseline", baseline=good)
    assert not r.passed
    assert r.message == "val_macro_f1 = 0.780 (final) vs baseline 0.830; needs >= 0.830"
    tol = {"val_macro_f1": {"mode": "max", "abs": 0.03, "rel": 0.05}}  # 0.83 - 0.03 - 0.0415
    assert run_gate(worse, "baseline", {"metrics": tol}, baseline=good).passed
    with pytest.raises(GateFailure, match="--baseline-run"):
        run_gate(good, "baseline")


# --------------------------------------------------------------------------- aliases and bad logs


def test_metric_aliases_rename_columns(tmp_path: Path) -> None:
    values = {k: v for k, v in BASE_LOG.items()}
    values["eval_loss"] = values.pop("val_loss")
    d = make_run(tmp_path / "r", values=values, drop_columns=["val_loss"], checkpoints=False)
    with pytest.raises(RunDirError, match="no column 'val_loss'"):
        run_gate(d, "converged")
    assert run_gate(d, "converged", aliases={"val_loss": "eval_loss"}).passed


LOG_GATES = ["finite_log", "log_complete", "converged", "class_recall", "generalization_gap",
             "memorization", "suspicious_perfection"]


@pytest.mark.parametrize("gate", LOG_GATES)
@pytest.mark.parametrize("content", ["", "epoch,val_loss\n", "epoch,val_loss\n1,0.5,9\n", "epoch,val_loss\n1,x\n"])
def test_log_gates_on_broken_logs_raise_only_mlgates_errors(tmp_path: Path, gate: str, content: str) -> None:
    d = tmp_path / "r"
    d.mkdir()
    (d / "training_log.csv").write_text(content)
    try:
        result = run_gate(d, gate)
    except MlgatesError as err:
        message = str(err)
    else:  # a gate may also report a broken log as a RED result
        assert not result.passed
        message = result.message
    assert "training_log.csv" in message and "internal error" not in message
