"""Every user error of ``python -m model train`` is one line on stderr, naming the key or
file, with a non-zero exit code and no traceback (the spec's "errors that explain
themselves"). Each case is a real subprocess, as a user would meet it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import DEFAULT_CONFIG, REPO_ROOT, model_command, run_model, train_command


def _assert_one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def _write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exp.yaml"
    base = (REPO_ROOT / DEFAULT_CONFIG).read_text()
    path.write_text(base + text)
    return str(path)


@pytest.mark.parametrize(
    "extra_yaml, needles",
    [
        ("lerning_rate: 0.1\n", ["lerning_rate", "exp.yaml"]),                 # unknown top-level key
        ("model2: {}\n", ["model2"]),
    ],
)
def test_unknown_key_in_config_is_one_line(tmp_path, extra_yaml, needles):
    cfg = _write_config(tmp_path, extra_yaml)
    proc = run_model(train_command(tmp_path / "run", (), cfg))
    _assert_one_line_error(proc, *needles)
    assert not (tmp_path / "run").exists()  # nothing was written for a refused config


def test_unknown_nested_key_suggests_the_closest(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text((REPO_ROOT / DEFAULT_CONFIG).read_text().replace("  lr: 0.003", "  lrate: 0.003"))
    line = _assert_one_line_error(run_model(train_command(tmp_path / "run", (), str(path))),
                                  "train.lrate")
    assert "train.lr" in line.replace("train.lrate", "")


def test_wrong_type_names_the_key(tmp_path):
    proc = run_model(train_command(tmp_path / "run", ["train.epochs=many"]))
    _assert_one_line_error(proc, "train.epochs", "many")


def test_missing_config_file_names_the_file(tmp_path):
    proc = run_model(train_command(tmp_path / "run", (), str(tmp_path / "nope.yaml")))
    _assert_one_line_error(proc, "nope.yaml", "not found")


def test_unknown_override_key(tmp_path):
    proc = run_model(train_command(tmp_path / "run", ["train.lrr=0.1"]))
    _assert_one_line_error(proc, "train.lrr")


def test_unknown_dataset_name(tmp_path):
    proc = run_model(train_command(tmp_path / "run", ["data.name=mnist"]))
    _assert_one_line_error(proc, "data.name", "mnist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_run_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = run_model(train_command(locked / "run", ["train.epochs=1"]))
    finally:
        locked.chmod(0o700)
    _assert_one_line_error(proc, str(locked / "run"), "not writable")


@pytest.mark.slow
def test_run_dir_on_a_file_system_nobody_can_write(tmp_path):
    # /proc refuses new directories even to root, so this case runs in CI (as root) too
    proc = run_model(train_command(Path("/proc/mlgates-test/run"), ["train.epochs=1"]))
    _assert_one_line_error(proc, "/proc/mlgates-test/run", "not writable")


@pytest.mark.slow
def test_run_dir_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "run"
    _assert_one_line_error(run_model(train_command(target, ["train.epochs=1"])), str(target), "not writable")


@pytest.mark.slow
def test_run_dir_that_is_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    _assert_one_line_error(run_model(train_command(target, ["train.epochs=1"])), str(target))


@pytest.mark.slow
def test_no_config_is_refused_without_allow_defaults(tmp_path):
    proc = run_model(train_command(tmp_path / "run", (), None))
    _assert_one_line_error(proc, "--config", "--allow-defaults")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_default_tracking_is_refused_without_allow_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    text = (REPO_ROOT / DEFAULT_CONFIG).read_text()
    text = text.split("checkpoint:")[0]  # nobody chose the tracked metrics: the default applies
    path.write_text(text)
    _assert_one_line_error(run_model(train_command(tmp_path / "run", (), str(path))),
                           "checkpoint.tracked", "best_val_loss", "--allow-defaults")


@pytest.mark.slow
def test_tracked_metric_that_is_not_logged(tmp_path):
    proc = run_model(train_command(
        tmp_path / "run", ["checkpoint.tracked=[{metric: val_dice, mode: max}]"]))
    _assert_one_line_error(proc, "checkpoint.tracked", "val_dice")


@pytest.mark.slow
def test_early_stopping_monitor_that_is_not_logged(tmp_path):
    proc = run_model(train_command(tmp_path / "run", ["train.early_stopping.monitor=val_recall_cat"]))
    _assert_one_line_error(proc, "train.early_stopping.monitor", "val_recall_cat")


@pytest.mark.slow
def test_class_weights_of_the_wrong_length(tmp_path):
    proc = run_model(train_command(tmp_path / "run", ["train.class_weights=[1.0, 2.0]"]))
    _assert_one_line_error(proc, "train.class_weights", "10 classes")


def test_bad_command_line_is_one_line(tmp_path):
    proc = run_model(model_command("train", "--no-such-flag"))
    _assert_one_line_error(proc, "--no-such-flag")


@pytest.mark.slow
def test_truncated_last_checkpoint_says_so_and_suggests_fresh(tmp_path, trained_run, copy_run):
    from conftest import small_overrides

    overrides = (*small_overrides, "gates.inflight=null")
    run = copy_run(trained_run(overrides), tmp_path / "run")
    (run / "training_results.json").unlink()          # not finished: it will try to resume
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    proc = run_model(train_command(run, overrides))
    _assert_one_line_error(proc, "last.pt", "--fresh")
