"""The run-dir reader: lazy parsing, best/final rows, safe paths, safe checkpoints, and one
clear RunDirError naming the file for every malformed input."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import pytest
from gate_helpers import BASE_LOG, make_run, write_log
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mlgates.checkpoint_io import load_checkpoint_file
from pytest_mlgates.errors import MlgatesError, RunDirError
from pytest_mlgates.formats import open_run
from pytest_mlgates.runvalues import MissingColumnError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("rundir") / "run")


def test_log_columns_rows_and_final(synthetic: Path) -> None:
    run = open_run(synthetic)
    assert run.log.columns["epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert run.log.columns["val_loss"] == BASE_LOG["val_loss"]
    assert run.log.rows[1]["train_loss"] == 0.5
    assert run.final.val_loss == 0.46 and run.final["epoch"] == 5 and run.final.epoch == 5
    assert run.log.source.name == "training_log.csv"


def test_best_row_follows_the_monitor(synthetic: Path) -> None:
    run = open_run(synthetic)
    assert run.monitor == ("val_loss", "min")
    assert run.best_epoch == 3
    assert run.best.val_loss == 0.45 and run.best.epoch == 3


def test_best_ties_go_to_the_first_and_nan_is_never_best(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", values={"val_loss": [0.5, float("nan"), 0.4, 0.4, 0.6]})
    run = open_run(d)
    assert run.best_epoch == 3
    assert math.isnan(run.log.columns["val_loss"][1])


def test_small_json_files_and_config(synthetic: Path) -> None:
    run = open_run(synthetic)
    assert run.results["status"] == "completed"
    assert run.config["data"]["name"] == "breast_cancer"
    assert run.provenance["entry_point"] == "python -m model train"
    assert set(run.splits) >= {"train", "val", "test"}
    assert run.class_names == ["malignant", "benign"]
    assert run.tracked == [("val_loss", "min"), ("val_macro_f1", "max")]


def test_missing_optional_files_are_none(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    write_log(d, {k: v for k, v in BASE_LOG.items()})
    run = open_run(d)
    assert run.results is None and run.config is None and run.provenance is None and run.splits is None
    assert run.final.val_loss == 0.46


def test_missing_column_is_one_line_naming_the_log(synthetic: Path) -> None:
    run = open_run(synthetic)
    with pytest.raises(MissingColumnError, match=r"training_log.csv: no column 'val_dice'"):
        _ = run.final.val_dice
    assert getattr(run.final, "val_dice", None) is None  # an AttributeError too


def test_eval_env_has_columns_epoch_and_aliases(synthetic: Path) -> None:
    env = open_run(synthetic).eval_env({"eval_loss": "val_loss"})
    assert env.columns["eval_loss"] == env.columns["val_loss"]
    assert env.columns["epoch"][-1] == 5.0
    assert env.best_epoch == 3


def test_checkpoint_loads_once_per_process(synthetic: Path) -> None:
    run = open_run(synthetic)
    a = run.checkpoint("best_val_loss")
    b = open_run(synthetic).checkpoint("checkpoints/best_val_loss.pt")
    assert a is b  # one load per file per session, shared by every gate
    assert a["epoch"] == 3 and a["monitor"]["metric"] == "val_loss"
    assert run.checkpoint("final")["epoch"] == 5
    assert run.checkpoint("best")["monitor"]["metric"] == "val_loss"


@pytest.mark.parametrize("rel", ["../outside.txt", "/etc/passwd", "a/../../x", ""])
def test_resolve_refuses_paths_that_leave_the_run_dir(synthetic: Path, rel: str) -> None:
    with pytest.raises(RunDirError):
        open_run(synthetic).resolve(rel)


def test_resolve_refuses_a_symlink_out(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", checkpoints=False)
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    os.symlink(secret, d / "link.txt")
    with pytest.raises(RunDirError, match="symlink leads outside"):
        open_run(d).resolve("link.txt")
    (d / "training_results.json").unlink()
    os.symlink(secret, d / "training_results.json")
    with pytest.raises(RunDirError, match="outside"):
        _ = open_run(d).results


def test_open_run_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="run dir not found"):
        open_run(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(RunDirError, match="not a directory"):
        open_run(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match=r"empty: not a run dir"):
        open_run(tmp_path / "empty")


BROKEN_LOGS = {
    "header only": ("epoch,train_loss,val_loss\n", None),
    "ragged row": ("epoch,train_loss,val_loss\n1,0.5,0.4\n2,0.3\n", r"training_log.csv line 3: 2 cells, header has 3"),
    "non-numeric": ("epoch,train_loss,val_loss\n1,0.5,abc\n", r"training_log.csv line 2, column val_loss: 'abc' is not a number"),
    "no epoch": ("step,loss\n1,2\n", r"training_log.csv: header has no 'epoch' column"),
    "empty": ("", r"training_log.csv: empty file"),
    "duplicate column": ("epoch,a,a\n1,2,3\n", r"column 'a' appears twice"),
    "binary": (b"\xff\xfe\x00garbage", r"training_log.csv: not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_LOGS))
def test_broken_logs_give_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    content, message = BROKEN_LOGS[name]
    d = tmp_path / "r"
    d.mkdir()
    path = d / "training_log.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    run = open_run(d)
    if message is None:  # header only parses; the rows are just absent
        assert len(run.log) == 0
        with pytest.raises(RunDirError, match="no rows"):
            _ = run.final
        return
    with pytest.raises(RunDirError, match=message) as info:
        _ = run.log
    assert "\n" not in str(info.value)
    with pytest.raises(RunDirError):  # cached: the same error again, not a crash
        _ = run.log


def test_nan_and_inf_cells_are_numbers_and_empty_cells_are_recorded(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    (d / "training_log.csv").write_text("epoch,a,b\n1,nan,inf\n2,,-inf\n")
    log = open_run(d).log
    assert math.isnan(log.columns["a"][0]) and log.columns["b"] == [math.inf, -math.inf]
    assert log.empty == {"a": [2]}


@pytest.mark.parametrize("name", ["training_results.json", "provenance.json", "splits.json"])
def test_truncated_json_names_file_line_and_column(synthetic: Path, tmp_path: Path, name: str) -> None:
    import shutil

    d = Path(shutil.copytree(synthetic, tmp_path / "r"))
    text = (d / name).read_text()
    (d / name).write_text(text[: len(text) // 2])
    attr = {"training_results.json": "results", "provenance.json": "provenance", "splits.json": "splits"}[name]
    with pytest.raises(RunDirError, match=rf"{name}: invalid JSON at line 1, column \d+"):
        getattr(open_run(d), attr)


def test_directory_where_a_file_should_be(tmp_path: Path) -> None:
    d = tmp_path / "r"
    (d / "training_log.csv").mkdir(parents=True)
    with pytest.raises(RunDirError, match="training_log.csv: is a directory"):
        _ = open_run(d).log


def test_huge_sparse_log_is_refused_quickly(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    with open(d / "training_log.csv", "wb") as fh:
        fh.truncate(2 * 1024**3)
    with pytest.raises(RunDirError, match="larger than"):
        _ = open_run(d).log


def test_yaml_with_python_tags_is_refused_without_running_it(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", checkpoints=False)
    marker = tmp_path / "pwned"
    (d / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RunDirError, match="config.yaml: .*invalid YAML"):
        _ = open_run(d).config
    assert not marker.exists()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused_and_lists_the_globals(tmp_path: Path) -> None:
    import torch

    d = make_run(tmp_path / "r", checkpoints=False)
    marker = tmp_path / "pwned"
    torch.save({"model": _Evil(str(marker))}, d / "checkpoints" / "final.pt")
    with pytest.raises(RunDirError, match=r"final.pt: refused to load: .*(posix|os)\.system") as info:
        open_run(d).checkpoint("final")
    assert not marker.exists()
    assert "\n" not in str(info.value)


def test_legacy_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", checkpoints=False)
    marker = tmp_path / "pwned"
    (d / "checkpoints" / "final.pt").write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(RunDirError, match="final.pt: "):
        open_run(d).checkpoint("final")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x00" * 64], ids=["empty", "truncated", "zeros"])
def test_truncated_or_garbage_checkpoint(tmp_path: Path, content: bytes, synthetic: Path) -> None:
    d = make_run(tmp_path / "r", checkpoints=False)
    if content.startswith(b"PK"):
        content = (synthetic / "checkpoints" / "final.pt").read_bytes()[:300]
    (d / "checkpoints" / "final.pt").write_bytes(content)
    with pytest.raises(RunDirError, match=r"checkpoints/final.pt: (empty file|not a loadable checkpoint)"):
        open_run(d).checkpoint("final")


def test_checkpoint_that_is_not_a_dict(tmp_path: Path) -> None:
    import torch

    d = make_run(tmp_path / "r", checkpoints=False)
    torch.save([1, 2, 3], d / "checkpoints" / "final.pt")
    with pytest.raises(RunDirError, match="holds a list, expected a checkpoint dict"):
        load_checkpoint_file(d / "checkpoints" / "final.pt")


def test_metric_history_is_the_fallback_log(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", checkpoints=False)
    (d / "training_log.csv").unlink()
    run = open_run(d)
    assert run.log.kind == "metric_history"
    assert run.final.val_loss == 0.46


def test_lightning_metrics_csv_is_read_per_epoch(tmp_path: Path) -> None:
    d = tmp_path / "lightning"
    d.mkdir()
    (d / "metrics.csv").write_text(
        "epoch,step,train_loss,val_loss,val_acc\n"
        "0,49,0.9,,\n0,99,0.8,,\n0,99,,0.7,0.6\n"
        "1,149,0.6,,\n1,199,0.5,,\n1,199,,0.55,0.7\n"
    )
    run = open_run(d)
    assert run.log.kind == "lightning"
    assert run.log.columns["epoch"] == [0.0, 1.0]  # Lightning's own numbers, never renumbered
    assert run.log.first_epoch == 0
    assert run.log.columns["train_loss"] == [0.8, 0.5]
    assert run.log.columns["step"] == [99.0, 199.0]  # the step of each epoch's last row
    assert run.final.val_acc == 0.7


def test_huggingface_trainer_state_is_read_per_epoch(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    d.mkdir()
    (d / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"epoch": 0.5, "loss": 0.9, "step": 5}, {"epoch": 1.0, "loss": 0.8, "step": 10},
        {"epoch": 1.0, "eval_loss": 0.7, "eval_accuracy": 0.6, "step": 10},
        {"epoch": 2.0, "loss": 0.5, "step": 20}, {"epoch": 2.0, "eval_loss": 0.6, "step": 20},
        {"epoch": 2.0, "train_runtime": 12.0, "train_loss": 0.6, "step": 20},
    ]}))
    run = open_run(d)
    assert run.log.columns["epoch"] == [1.0, 2.0]
    assert run.log.columns["loss"] == [0.8, 0.5]
    assert run.final.eval_loss == 0.6
    env = run.eval_env({"val_loss": "eval_loss"})
    assert env.columns["val_loss"] == [0.7, 0.6]


def test_every_error_is_an_mlgates_error() -> None:
    assert issubclass(RunDirError, MlgatesError)
    assert issubclass(MissingColumnError, RunDirError)


# --------------------------------------------------------------------------- logs by global step

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 3), st.floats(-1e3, 1e3)), min_size=1, max_size=40),
       st.booleans())
def test_regroup_by_logged_epoch_keeps_the_last_value_of_each_epoch(
        points: list[tuple[int, int, float]], zero_based: bool) -> None:
    """Random (epoch, metric, value) points logged at increasing global steps: each epoch's
    cell is the last value logged in it; epochs keep the trainer's numbers (Lightning's from
    0), and fractional epochs done are the epoch they complete, from 1."""
    from pytest_mlgates.runlog import Log
    from pytest_mlgates.runlog_regroup import regroup_by_logged_epoch

    points = sorted(points, key=lambda p: p[0])  # epochs never go back
    names = [f"m{k}" for k in range(1, 4)]
    steps = list(range(10, 10 + 10 * len(points), 10))
    columns: dict[str, list[float]] = {"epoch": [float(s) for s in steps]}
    marks = [float(e) if zero_based else float(e) + 0.999 for e, _, _ in points]
    columns["logged_epoch"] = marks
    empty: dict[str, list[int]] = {}
    for name in names:
        columns[name] = []
        for step, (_, k, value) in zip(steps, points):
            columns[name].append(value if f"m{k}" == name else float("nan"))
            if f"m{k}" != name:
                empty.setdefault(name, []).append(step)
    got = regroup_by_logged_epoch(Log(columns=columns, source=Path("x"), empty=empty, kind="mlflow"))
    def epoch_of(e: int) -> float:
        if not zero_based:
            return float(e + 1)  # e + 0.999 epochs done: the (e+1)-th epoch
        if min(p[0] for p in points) == 0:
            return float(e)  # Lightning's 0-based epoch index, as logged
        return float(max(1, e))  # whole numbers not starting at 0: epochs done

    expected: dict[float, dict[str, float]] = {}
    for e, k, value in points:
        expected.setdefault(epoch_of(e), {})[f"m{k}"] = value
    assert got.epochs == sorted(expected)
    for i, epoch in enumerate(got.epochs):
        for name in names:
            if name in expected[epoch]:
                assert got.columns[name][i] == expected[epoch][name]
            elif name in got.columns:
                assert math.isnan(got.columns[name][i]) and int(epoch) in got.empty[name]
    assert "logged_epoch" not in got.columns


def test_regroup_leaves_a_log_without_logged_epoch_alone() -> None:
    from pytest_mlgates.runlog import Log
    from pytest_mlgates.runlog_regroup import regroup_by_logged_epoch

    log = Log(columns={"epoch": [1.0, 2.0], "val_loss": [0.5, 0.4]}, source=Path("x"))
    assert regroup_by_logged_epoch(log) is log
