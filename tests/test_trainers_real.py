"""The same gate file on runs of the real trainers: Lightning, the HF Trainer, MLflow (and
TensorBoard event files).

Each trainer (installed as the test-only ``trainers`` extra) trains the digits MLP of
tests/trainers/ in a few seconds, healthy and with each fault of the issue: a collapsed
class, a NaN loss, a best checkpoint that went missing.  Then one real pytest session runs
``examples/any-trainer.gates.yaml`` -- the file the engine's runs pass too -- against every
trainer's four run dirs, and every verdict is checked: the healthy run GREEN, each fault
RED on its criterion with its one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO_ROOT, TRAINER_EPOCHS, TRAINER_SCRIPTS, need_package, trainer_env

pytestmark = pytest.mark.slow

GATES = REPO_ROOT / "examples" / "any-trainer.gates.yaml"
FAULTS = ("healthy", "collapsed", "nan", "no_best")
CRITERIA = ("no_nan", "log_complete", "every_class_learned", "minority_not_collapsed",
            "best_checkpoint_per_metric", "best_model_gives_a_softmax", "val_loss_improves")

TRAINERS = ["lightning", "huggingface", "mlflow-sqlite", "mlflow-file", "tensorboard"]

# fault -> (criterion that must turn RED, a piece of its one-line message)
EXPECTED_RED = {
    "collapsed": [("every_class_learned", r"recall_3 = 0(\.0+)?\b"), ("minority_not_collapsed", r"= 0")],
    "nan": [("no_nan", r"= nan")],
    "no_best": [("best_checkpoint_per_metric", r": not found; ")],
}


def _verdicts(output: str) -> dict[tuple[str, str], str]:
    """(criterion, run label) -> PASSED/FAILED/ERROR from ``-rA`` short summary lines."""
    found: dict[tuple[str, str], str] = {}
    for status, criterion, label in re.findall(r"^(PASSED|FAILED|ERROR) \S*::(\w+)\[([\w-]+)\]", output, re.MULTILINE):
        found[(criterion, label)] = status
    return found


def _message(output: str, criterion: str, label: str) -> str:
    """The one-line failure message pytest printed for one item."""
    match = re.search(rf"_ gate: {criterion}\[{label}\] _+\n(.*)\n", output)
    return match.group(1) if match else ""


def test_same_gate_file_green_and_red_on_real_trainer_runs(
    trainer_run: Callable[[str, str], Path], pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One real pytest session of the gate file on every trainer's four runs (labelled
    <trainer>-<fault>): each trainer's healthy run GREEN, each of its faults RED with its line."""
    import importlib.util

    trainers = [t for t in TRAINERS if importlib.util.find_spec(TRAINER_SCRIPTS[t][2]) is not None]
    if not trainers:
        pytest.skip("no trainer library is installed (pip install -e '.[trainers]')")
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])  # the gate file's model class
    labels = [f"{trainer}-{fault}" for trainer in trainers for fault in FAULTS]
    for trainer in trainers:
        for fault in FAULTS:
            (pytester.path / f"{trainer}-{fault}").symlink_to(trainer_run(trainer, fault), target_is_directory=True)
    args = [str(GATES), "-rA", "-p", "no:cacheprovider", "--mlgates-archive=off", "--rootdir", str(pytester.path)]
    for label in labels:
        args += ["--run-dir", label]
    result = pytester.runpytest_subprocess(*args, timeout=600)
    output = result.stdout.str()
    verdicts = _verdicts(output)
    assert len(verdicts) == len(CRITERIA) * len(labels), output[-4000:]
    for trainer in trainers:
        healthy = {c: verdicts[(c, f"{trainer}-healthy")] for c in CRITERIA}
        assert set(healthy.values()) == {"PASSED"}, (trainer, healthy, output[-4000:])
        for fault, reds in EXPECTED_RED.items():
            for criterion, pattern in reds:
                label = f"{trainer}-{fault}"
                assert verdicts[(criterion, label)] == "FAILED", (label, criterion, output[-4000:])
                message = _message(output, criterion, label)
                assert re.search(pattern, message), (label, criterion, message)
                assert "Traceback" not in message
    assert "INTERNALERROR" not in output


@pytest.mark.parametrize("trainer", TRAINERS)
def test_run_format_detected_for_each_trainer(trainer: str, trainer_run: Callable[[str, str], Path]) -> None:
    need_package(TRAINER_SCRIPTS[trainer][2])
    from pytest_mlgates.formats import open_run

    run = open_run(trainer_run(trainer, "healthy"))
    assert run.format == trainer.split("-")[0]
    assert TRAINER_SCRIPTS[trainer]
    assert len(run.log) == TRAINER_EPOCHS
    assert run.best_checkpoint(*(("eval_loss", "min") if trainer == "huggingface" else ("val_loss", "min"))).problem is None


def test_engine_run_passes_the_same_gate_file(trained_run, pytester: pytest.Pytester,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's checkpoints are judged with the engine's own model: its subject (this
    repository's conftest hands it over) comes before the gate file's ``model:``, which
    names the class of the other trainers' runs."""
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    run = trained_run()  # configs/default.yaml, the run make demo trains
    (pytester.path / "engine").symlink_to(run, target_is_directory=True)
    pytester.makeconftest("from model.mlgates import mlgates_subject  # noqa: F401\n")
    (pytester.path / GATES.name).write_text(GATES.read_text(encoding="utf-8"), encoding="utf-8")
    result = pytester.runpytest_subprocess(GATES.name, "-rA", "-p", "no:cacheprovider", "--mlgates-archive=off",
                                           "--run-dir", "engine", timeout=300)
    verdicts = _verdicts(result.stdout.str())
    assert verdicts == {(c, "engine"): "PASSED" for c in CRITERIA}, result.stdout.str()[-4000:]


def test_lightning_logging_to_mlflow_by_global_step_reads_as_the_csv_run(
        trainer_run: Callable[[str, str], Path]) -> None:
    """MLFlowLogger writes one point per global step plus an ``epoch`` metric; read back, the
    log is the one the CSVLogger of the same seeded run has: the same epochs, the same numbers."""
    from pytest_mlgates.formats import open_run

    by_steps = open_run(trainer_run("lightning-mlflow", "healthy"))
    by_csv = open_run(trainer_run("lightning", "healthy"))
    assert by_steps.format == "mlflow" and by_csv.format == "lightning"
    # Lightning's own epoch numbers (from 0), whichever logger wrote them
    assert by_steps.log.epochs == by_csv.log.epochs == [float(e) for e in range(TRAINER_EPOCHS)]
    assert by_steps.log.first_epoch == by_csv.log.first_epoch == 0
    shared = sorted(set(by_steps.log.columns) & set(by_csv.log.columns) - {"epoch"})
    assert {"train_loss", "val_loss", "val_min_recall", "val_recall_3"} <= set(shared)
    for name in shared:
        assert by_steps.log.columns[name] == pytest.approx(by_csv.log.columns[name], rel=1e-6), name


def test_mlflow_run_named_by_its_artifact_folder(trainer_run: Callable[[str, str], Path]) -> None:
    """One run of a SQLite store, named by the folder of its artifacts (how a store of many
    runs is narrowed to one): the same log and the same best checkpoint as the store root."""
    from pytest_mlgates.formats import open_run

    store = trainer_run("mlflow-sqlite", "healthy")
    (folder,) = [p for p in (store / "mlartifacts").iterdir() if p.is_dir()]
    by_store, by_folder = open_run(store), open_run(folder)
    assert by_folder.format == "mlflow" and by_folder.log.columns == by_store.log.columns
    assert by_folder.best_checkpoint("val_loss", "min").problem is None


@pytest.mark.parametrize("trainer", ["lightning", "huggingface"])
def test_resume_point_of_real_lightning_and_hf_runs(trainer: str, trainer_run: Callable[[str, str], Path]) -> None:
    from gate_helpers import run_gate

    r = run_gate(trainer_run(trainer, "healthy"), "resume_point")
    last = TRAINER_EPOCHS - 1 if trainer == "lightning" else TRAINER_EPOCHS  # each log's own numbering
    assert r.passed and f"epoch {last} with model, optimizer" in r.message, r.message
    assert ("no RNG state" in r.message) == (trainer == "lightning")  # the HF Trainer saves rng_state.pth


def test_lightning_run_with_two_model_checkpoints_tracks_both(trainer_run: Callable[[str, str], Path],
                                                              tmp_path: Path) -> None:
    """Two ModelCheckpoint callbacks are two tracked metrics, each with its own best file;
    deleting one best file turns best_checkpoints RED naming that file and that metric."""
    import shutil

    from gate_helpers import run_gate

    from pytest_mlgates.formats import open_run

    run = trainer_run("lightning-2ckpt", "healthy")
    assert open_run(run).tracked == [("val_loss", "min"), ("val_min_recall", "max")]
    r = run_gate(run, "best_checkpoints")  # no metrics: the run's own monitors
    assert r.passed and "2 files" == r.value and "best-recall-" in r.message, r.message
    copy = shutil.copytree(run, tmp_path / "version_0")
    for best in (copy / "checkpoints").glob("best-recall-*.ckpt"):
        best.unlink()
    r = run_gate(copy, "best_checkpoints")
    assert not r.passed and "ModelCheckpoint(monitor='val_min_recall') names it" in r.message


# --------------------------------------------------------------------------- Lightning: several ModelCheckpoints

LIGHTNING_GATES = """\
title: Lightning - every criterion a healthy run must pass
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: log_complete
    gate: log_complete
  - name: every_class_learned
    gate: class_recall
    floor: 0
  - name: minority_not_collapsed
    check: "final.val_min_recall > 0"
  - name: best_checkpoint_per_metric
    gate: best_checkpoints
  - name: best_model_gives_a_softmax
    gate: checkpoint_softmax
    checkpoint: best_val_loss
    model: "digits_model:DigitsMLP"
    input_shape: [16, 64]
  - name: val_loss_improves
    gate: converged
    metric: val_loss
    min_improvement: 0.1
  - name: resumable
    gate: resume_point
"""
LIGHTNING_CRITERIA = ("no_nan", "log_complete", "every_class_learned", "minority_not_collapsed",
                      "best_checkpoint_per_metric", "best_model_gives_a_softmax", "val_loss_improves", "resumable")


def test_two_model_checkpoints_take_each_best_from_the_newest_state(
        trainer_run: Callable[[str, str], Path], tmp_path: Path) -> None:
    """issue 14: val_min_recall improves in the last epoch, after the val_loss callback has
    saved last.ckpt, so last.ckpt names the recall callback's previous best file, which
    top-1 has deleted (\"bestrec-epoch=0-...ckpt: not found\" while the file is epoch=1)."""
    import shutil

    import torch
    from gate_helpers import run_gate

    from pytest_mlgates.formats import open_run

    run = trainer_run("lightning-2ckpt-3", "healthy")
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    stale = [s["best_model_path"] for k, s in last["callbacks"].items() if "val_min_recall" in k]
    assert stale and not Path(stale[0]).exists()  # the trap is real in this run
    got = open_run(run)
    assert got.tracked == [("val_loss", "min"), ("val_min_recall", "max")]
    record = got.best_checkpoint("val_min_recall", "max")
    assert record.problem is None and record.epoch == 2 and "best-recall-epoch=2" in record.shown
    r = run_gate(run, "best_checkpoints")
    assert r.passed and r.value == "2 files", r.message
    copy = Path(shutil.copytree(run, tmp_path / "version_0"))
    for best in (copy / "checkpoints").glob("best-recall-*.ckpt"):
        best.unlink()
    r = run_gate(copy, "best_checkpoints")
    # no file left on disk knows the epoch-2 best: the newest surviving state names its own
    assert not r.passed and r.value == "1 of 2 wrong", r.message
    assert "checkpoints/best-recall-epoch=" in r.message and ".ckpt: not found; ModelCheckpoint(monitor=" \
        "'val_min_recall') names it as its best_model_path" in r.message, r.message


def test_resume_point_of_a_checkpoint_saved_after_fit_is_placed_by_its_step(
        trainer_run: Callable[[str, str], Path]) -> None:
    """issue 17: ``trainer.save_checkpoint`` after ``fit`` writes ``epoch`` = max_epochs, one
    past the log's last epoch; its global_step places it at that epoch (it was RED:
    ``last.ckpt: epoch = 9; needs 8``)."""
    import torch
    from gate_helpers import run_gate

    run = trainer_run("lightning-after-fit", "healthy")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == TRAINER_EPOCHS
    r = run_gate(run, "resume_point")
    assert r.passed and f"last.ckpt: epoch {TRAINER_EPOCHS - 1} with model, optimizer" in r.message, r.message


def test_stale_last_ckpt_of_lightning_names_its_cause_and_the_fix(
        trainer_run: Callable[[str, str], Path]) -> None:
    """issue 17: since Lightning 2.6 ModelCheckpoint(save_last=True) rewrites last.ckpt only
    when it saves a top-k file; val_loss gets worse in the last epoch of this run, so its
    last.ckpt is an epoch behind. The RED line says why and what to add (not a bare
    ``epoch = 2; needs 3``); with that fix the same run's resume point is GREEN."""
    from gate_helpers import run_gate

    r = run_gate(trainer_run("lightning-worse-last", "healthy"), "resume_point")
    last = TRAINER_EPOCHS - 1
    assert not r.passed
    assert f"last.ckpt: epoch = {last - 1}; needs {last}, the last epoch in " in r.message, r.message
    assert (f"(ModelCheckpoint(monitor='val_loss', save_last=True) rewrites last.ckpt only when it saves a top-k "
            f"file (Lightning >= 2.6), and val_loss did not improve after epoch {last - 1}; for a resume point "
            "every epoch add ModelCheckpoint(monitor=None, save_last=True))") in r.message, r.message
    r = run_gate(trainer_run("lightning-worse-last-fixed", "healthy"), "resume_point")
    assert r.passed and f"last.ckpt: epoch {last} with model, optimizer" in r.message, r.message
    r = run_gate(trainer_run("lightning-worse-last-fixed", "healthy"), "best_checkpoints")
    assert r.passed and f"best-epoch={last - 1}-" in r.message, r.message


def test_healthy_lightning_runs_have_no_false_red(
        trainer_run: Callable[[str, str], Path], pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """One and two ModelCheckpoints, with and without a splits.json the user put in the
    version dir (it once turned the run into an engine run): every criterion GREEN. One
    session on the six copies (labelled <trainer>[-stray])."""
    import shutil

    need_package("lightning")
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    labels = []
    for trainer in ("lightning", "lightning-2ckpt", "lightning-2ckpt-3"):
        for stray in (False, True):
            label = f"{trainer}-stray" if stray else trainer
            run = Path(shutil.copytree(trainer_run(trainer, "healthy"), pytester.path / label))
            if stray:
                (run / "splits.json").write_text('{"train": [0, 1, 2], "val": [3, 4]}')
            labels.append(label)
    pytester.makefile(".gates.yaml", lightning=LIGHTNING_GATES)
    args = ["lightning.gates.yaml", "-rA", "-p", "no:cacheprovider", "--mlgates-archive=off"]
    for label in labels:
        args += ["--run-dir", label]
    result = pytester.runpytest_subprocess(*args, timeout=600)
    verdicts = _verdicts(result.stdout.str())
    assert verdicts == {(c, label): "PASSED" for c in LIGHTNING_CRITERIA for label in labels}, \
        result.stdout.str()[-4000:]


def test_lightning_messages_carry_lightnings_own_epochs(
        trainer_run: Callable[[str, str], Path]) -> None:
    from gate_helpers import run_gate

    r = run_gate(trainer_run("lightning", "collapsed"), "class_recall")
    assert not r.passed and r.message == f"val_recall_3 = 0.000 at epoch {TRAINER_EPOCHS - 1} (final); needs > 0"
    r = run_gate(trainer_run("lightning", "nan"), "finite_log", {"columns": "val_loss"})
    assert not r.passed and r.message.startswith("val_loss = nan at epoch 2;"), r.message  # its 3rd epoch, from 0


def test_prove_turns_every_criterion_of_a_lightning_run_red(
        trainer_run: Callable[[str, str], Path], tmp_path: Path) -> None:
    """On the folder a user names (the CSVLogger's save_dir, one version_N below)."""
    import json
    import shutil
    import subprocess
    import sys

    run = trainer_run("lightning-2ckpt-3", "healthy")
    save_dir = tmp_path / "out"
    shutil.copytree(run, save_dir / "lightning_logs" / "version_0")
    gates = tmp_path / "lightning.gates.yaml"
    gates.write_text(LIGHTNING_GATES)
    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "prove", str(save_dir), "--gates", str(gates),
                           "--json"], capture_output=True, text=True, timeout=900, env=trainer_env(), cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert sorted(report["proven"]) == sorted(LIGHTNING_CRITERIA), json.dumps(report["criteria"], indent=1)[-4000:]
    assert report["defects"] == report["no_mutation"] == report["mutation_failed"] == report["not_green_before"] == []
    by_name = {c["criterion"]: c for c in report["criteria"]}
    assert by_name["log_complete"]["mutation"] == "val_loss emptied at the last epoch of metrics.csv"
    assert by_name["best_checkpoint_per_metric"]["mutation"].startswith("checkpoints/best-epoch=")


@pytest.mark.parametrize("trainer", ["huggingface", "mlflow-sqlite", "mlflow-file", "tensorboard"])
def test_prove_turns_every_criterion_red_on_other_trainers_runs(
        trainer: str, trainer_run: Callable[[str, str], Path], tmp_path: Path) -> None:
    """Each format edits its own files: trainer_state.json and checkpoint-N/, an MLflow store
    (SQLite rows, file-store lines), TensorBoard event records (framed again with their CRCs)."""
    import json
    import shutil
    import subprocess
    import sys

    need_package(TRAINER_SCRIPTS[trainer][2])
    source = trainer_run(trainer, "healthy")
    if trainer == "mlflow-file":  # the run folder mlruns/<exp>/<run>/, inside its copied store
        store = Path(shutil.copytree(source.parents[2], tmp_path / "store"))
        run = store / source.relative_to(source.parents[2])
    else:
        run = Path(shutil.copytree(source, tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "prove", str(run), "--gates", str(GATES),
                           "--json"], capture_output=True, text=True, timeout=900, env=trainer_env(), cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert sorted(report["proven"]) == sorted(CRITERIA), json.dumps(report["criteria"], indent=1)[-4000:]
    assert report["defects"] == report["mutation_failed"] == report["not_green_before"] == []
