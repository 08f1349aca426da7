"""Which format a directory is: by each format's defining files, never by a guess.

A directory that fits two formats, or none, fails every item of that run in one line naming
the candidates and ``--run-format``; a stray file of another trainer (``splits.json`` in a
Lightning version dir) never changes the format; ``run: {format: ...}`` and ``--run-format``
force one, ``--run-format`` winning.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_formats_lightning_hf import lightning_dir

from pytest_mlgates import formats
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import open_run
from pytest_mlgates.rundir import RunSection

#: each format's defining files, as a run of it holds them (one at least)
DEFINING: dict[str, list[str]] = {
    "engine": ["training_log.csv", "training_results.json", "metric_history.json"],
    "lightning": ["metrics.csv", "hparams.yaml", "checkpoints/x.ckpt"],
    "huggingface": ["trainer_state.json", "checkpoint-10/"],
    "mlflow": ["mlflow.db", "mlruns/"],
    "tensorboard": ["events.out.tfevents.1.host", "sub/events.out.tfevents.2.host"],
}
#: files no format is defined by: they may sit in any run
STRAYS = ["splits.json", "config.yaml", "provenance.json", "checkpoints/best_val_loss.pt", "notes.txt"]


def make(root: Path, names: list[str]) -> Path:
    for name in names:
        path = root / name.rstrip("/")
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    return root


def test_every_format_has_a_module_with_its_parts() -> None:
    """Adding a format is one module and one line: the registry is the only list."""
    assert formats.FORMATS == tuple(formats.REGISTRY)
    for name in formats.FORMATS:
        module = formats.format_module(name)
        assert isinstance(module.IDENTIFIED_BY, str) and module.IDENTIFIED_BY
        assert callable(module.detect) and callable(module.read) and module.Mutations is not None
        assert module.__name__ == f"pytest_mlgates.formats.{name}"


@pytest.mark.parametrize("name", list(DEFINING))
def test_each_formats_defining_files_alone_detect_it(tmp_path: Path, name: str) -> None:
    for i, defining in enumerate(DEFINING[name]):
        run = make(tmp_path / f"r{i}", [defining, *STRAYS])
        assert formats.detect(run) == name, defining


def test_a_plain_run_is_never_detected(tmp_path: Path) -> None:
    run = make(tmp_path, ["logs/metrics.csv", "ckpt/last.pt", "splits.json"])
    with pytest.raises(RunDirError) as err:
        open_run(run)
    assert "not a run dir of any known format" in str(err.value)
    assert "plain: only a gate file's run: {format: plain, log: ...} or --run-format plain" in str(err.value)
    assert str(err.value).endswith("pass --run-format NAME or set run: {format: NAME} in the gate file")


def test_two_formats_at_once_is_one_line_naming_both(tmp_path: Path) -> None:
    run = make(tmp_path / "x", ["metrics.csv", "training_log.csv"])
    with pytest.raises(RunDirError) as err:
        open_run(run)
    assert str(err.value) == (f"{run}: looks like both engine (training_log.csv) and lightning (metrics.csv); "
                              "pass --run-format NAME or set run: {format: NAME} in the gate file")
    assert open_run(run, "lightning").format == "lightning"
    assert open_run(run, None, RunSection(format="engine")).format == "engine"
    assert open_run(run, "lightning", RunSection(format="engine")).format == "lightning"  # --run-format wins


def test_tensorboard_files_inside_a_lightning_or_hf_run_are_its_logger(tmp_path: Path) -> None:
    """Lightning's TensorBoardLogger writes into the version dir, the HF Trainer's callback
    under the output dir: their event files are the run's own, not a rival format."""
    assert formats.detect(make(tmp_path / "l", ["metrics.csv", "events.out.tfevents.1.h"])) == "lightning"
    assert formats.detect(make(tmp_path / "h", ["trainer_state.json", "runs/x/events.out.tfevents.1.h"])) == "huggingface"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.lists(st.sampled_from(list(DEFINING)), min_size=0, max_size=3, unique=True),
       pick=st.data(), strays=st.lists(st.sampled_from(STRAYS), max_size=3, unique=True))
def test_detection_never_returns_a_format_on_a_dir_that_fits_two(
        tmp_path_factory: pytest.TempPathFactory, chosen: list[str], pick: st.DataObject, strays: list[str]) -> None:
    root = tmp_path_factory.mktemp("d")
    names = [pick.draw(st.sampled_from(DEFINING[name])) for name in chosen]
    make(root, names + strays)
    rivals = set(chosen)
    if rivals & {"lightning", "huggingface"}:
        rivals.discard("tensorboard")  # a logger of theirs, see above
    found = formats.detect(root)
    if len(rivals) == 1:
        assert found == next(iter(rivals))
    else:
        assert found is None
        with pytest.raises(RunDirError) as err:
            open_run(root)
        line = str(err.value)
        assert "\n" not in line and "--run-format NAME" in line
        assert all(name in line for name in rivals) if rivals else "not a run dir of any known format" in line


def test_a_stray_splits_json_never_changes_a_lightning_run(tmp_path: Path) -> None:
    run = lightning_dir(tmp_path)
    (run / "splits.json").write_text('{"train": [0, 1], "val": [2]}')
    (run / "config.yaml").write_text("seed: 0\n")
    got = open_run(run)
    assert got.format == "lightning" and got.splits == {"train": [0, 1], "val": [2]}
    assert open_run(tmp_path).format == "lightning"  # the save_dir holding one version_N


@pytest.mark.slow
def test_ambiguity_fails_every_item_of_that_run_in_one_line(tmp_path: Path, pytester: pytest.Pytester) -> None:
    run = lightning_dir(tmp_path)
    (run / "training_log.csv").write_text("epoch,val_loss\n1,0.5\n")
    pytester.makefile(".gates.yaml", g="exit_criteria:\n  - {name: a, gate: finite_log}\n  - {name: b, check: 'len(epoch) > 0'}\n")
    result = pytester.runpytest_subprocess("--run-dir", str(run), "-p", "no:cacheprovider", "--mlgates-archive=off")
    result.assert_outcomes(failed=2)
    line = (f"{run}: looks like both engine (training_log.csv) and lightning (metrics.csv, hparams.yaml, "
            "checkpoints/*.ckpt); pass --run-format NAME or set run: {format: NAME} in the gate file")
    assert result.stdout.str().count(line) >= 2  # the same one line for every item
    assert "Traceback" not in result.stdout.str()
    forced = pytester.runpytest_subprocess("--run-dir", str(run), "-p", "no:cacheprovider", "--mlgates-archive=off",
                                           "--run-format", "lightning")
    forced.assert_outcomes(passed=2)
    pytester.makefile(".gates.yaml", g="run: {format: lightning}\nexit_criteria:\n  - {name: a, gate: finite_log}\n")
    by_file = pytester.runpytest_subprocess("--run-dir", str(run), "-p", "no:cacheprovider", "--mlgates-archive=off")
    by_file.assert_outcomes(passed=1)


def test_run_format_choices_come_from_the_registry(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--run-format*"])
    assert "plain" in result.stdout.str() and all(name in result.stdout.str() for name in formats.FORMATS)


def test_an_unlistable_dir_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any directory")
    run = tmp_path / "locked"
    run.mkdir()
    run.chmod(0)
    try:
        with pytest.raises(RunDirError, match="cannot list run dir"):
            open_run(run)
    finally:
        run.chmod(0o755)


# --------------------------------------------------------------------------- the five formats of issue 17

#: each run a format is detected by (file -> content: Keras is detected by its log's header)
NEW_DEFINING: dict[str, list[dict[str, str]]] = {
    "ultralytics": [{"results.csv": "epoch,train/loss\n", "args.yaml": "task: classify\n"},
                    {"results.csv": "epoch,train/loss\n", "weights/last.pt": ""}],
    "timm": [{"summary.csv": "epoch,train_loss\n", "args.yaml": "model: x\n"},
             {"summary.csv": "epoch,train_loss\n", "last.pth.tar": ""}],
    "keras": [{"training.log": "epoch,loss\n0,1.0\n", "best.keras": ""},
              {"history.csv": "epoch;loss\n0;1.0\n", "ckpt/w.weights.h5": ""}],
    "dvclive": [{"dvclive/metrics.json": "{}"}, {"dvclive/plots/metrics/loss.tsv": "step\tloss\n"}],
    "wandb": [{"run-abc.wandb": ""}],
}
#: one defining file without its partner is no format: a results.csv, a summary.csv or an
#: epoch CSV may be anyone's
NOT_YET: list[dict[str, str]] = [{"results.csv": "epoch,train/loss\n"}, {"summary.csv": "epoch,train_loss\n"},
                                 {"training.log": "epoch,loss\n0,1.0\n"}, {"best.keras": ""},
                                 {"history.csv": "step,loss\n", "best.keras": ""}]


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("name", list(NEW_DEFINING))
def test_new_formats_detected_by_their_defining_files_only(tmp_path: Path, name: str) -> None:
    for i, files in enumerate(NEW_DEFINING[name]):
        run = _write(tmp_path / f"r{i}", files)
        make(run, STRAYS)
        assert formats.detect(run) == name, files


@pytest.mark.parametrize("files", NOT_YET, ids=lambda f: "+".join(f))
def test_half_a_format_is_no_format(tmp_path: Path, files: dict[str, str]) -> None:
    run = _write(tmp_path, files)
    assert formats.detect(run) is None
    with pytest.raises(RunDirError, match="not a run dir of any known format"):
        formats.choose(run)


def test_wandb_project_folder_leads_to_its_one_offline_run(tmp_path: Path) -> None:
    inner = _write(tmp_path / "wandb" / "offline-run-20261207_1-abc", {"run-abc.wandb": ""})
    (tmp_path / "wandb" / "latest-run").symlink_to(inner, target_is_directory=True)
    assert formats.choose(tmp_path) == (inner, "wandb")
    _write(tmp_path / "wandb" / "offline-run-20261207_2-def", {"run-def.wandb": ""})
    with pytest.raises(RunDirError, match="2 W&B runs"):
        formats.choose(tmp_path)
