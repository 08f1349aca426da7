"""A plain run: a hand-written loop's files, read where the gate file's ``run:`` section says.

The first half builds logs and best files the way a user's loop writes them (no trainer);
the second trains the real loop of tests/trainers/plain_run.py (digits, 4 and 15 epochs,
healthy and with each fault) and runs real pytest sessions and ``mlgates prove`` on it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import need_package, trainer_env
from pytest_mlgates.collect import parse_gate_text
from pytest_mlgates.errors import GateFileError, RunDirError
from pytest_mlgates.formats import open_run
from pytest_mlgates.gates import GateContext, get_gate, validate_params
from pytest_mlgates.rundir import RunSection

SECTION = """\
run:
  format: plain
  log: {log}
  epochs_from: 1
  checkpoints: "ckpt/*.pt"
  best: "ckpt/best_{{metric}}.pt"
  tracked: [{{metric: val_loss, mode: min}}, {{metric: val_min_recall, mode: max}}]
  splits: splits.json
"""

CRITERIA = """\
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
  - name: no_leak
    gate: split_integrity
"""
NAMES = ("no_nan", "log_complete", "every_class_learned", "minority_not_collapsed", "best_checkpoint_per_metric",
         "best_model_gives_a_softmax", "val_loss_improves", "resumable", "no_leak")


def gate_text(log: str = "logs/metrics.csv") -> str:
    return "title: plain loop\n" + SECTION.format(log=log) + CRITERIA


def section_of(text: str) -> RunSection:
    document = parse_gate_text(text, Path("plain.gates.yaml"))
    assert document is not None and isinstance(document.run, RunSection)
    return document.run


def plain_gate(run_dir: Path, gate: str, params: dict[str, Any] | None = None,
               section: RunSection | None = None) -> Any:
    """One gate on a plain run, the way an item runs it."""
    params = dict(params or {})
    validate_params(gate, params)
    run = open_run(run_dir, None, section or section_of(gate_text()))
    return get_gate(gate).fn(run, params, GateContext(rootdir=Path(__file__).parent))


def write_log(run_dir: Path, rows: list[dict[str, Any]], name: str = "logs/metrics.csv") -> Path:
    path = run_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        header = list(rows[0])
        path.write_text(",".join(header) + "\n" + "".join(",".join(str(r[h]) for h in header) + "\n" for r in rows))
    return path


ROWS = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_min_recall": 0.5 + e / 100,
         "val_recall_a": 0.6, "val_recall_b": 0.5 + e / 100} for e in range(1, 6)]


# --------------------------------------------------------------------------- the log


def test_csv_and_jsonl_logs_read_alike_with_the_logs_own_epochs(tmp_path: Path) -> None:
    write_log(tmp_path, ROWS)
    write_log(tmp_path, ROWS, "logs/metrics.jsonl")
    by_csv = open_run(tmp_path, None, section_of(gate_text()))
    by_jsonl = open_run(tmp_path, None, section_of(gate_text("logs/metrics.jsonl")))
    assert by_csv.format == by_jsonl.format == "plain"
    assert by_csv.log.epochs == by_jsonl.log.epochs == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert by_csv.log.columns == by_jsonl.log.columns and by_csv.log.first_epoch == 1
    assert by_csv.tracked == [("val_loss", "min"), ("val_min_recall", "max")]
    assert by_csv.final.val_loss == pytest.approx(0.24) and by_csv.best_epoch == 5


def test_a_nan_in_the_first_row_of_a_one_based_log_says_epoch_1(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[0]["val_loss"] = "nan"
    write_log(tmp_path, rows)
    r = plain_gate(tmp_path, "finite_log")
    assert not r.passed and r.message == "val_loss = nan at epoch 1; needs finite"
    rows[0]["val_loss"] = 1.2
    rows[-1]["val_recall_b"] = 0.0
    write_log(tmp_path, rows)
    r = plain_gate(tmp_path, "class_recall")
    assert not r.passed and r.message == "val_recall_b = 0.000 at epoch 5 (final); needs > 0"
    assert plain_gate(tmp_path, "log_complete").passed


def test_a_zero_based_log_keeps_its_numbers(tmp_path: Path) -> None:
    write_log(tmp_path, [dict(r, epoch=r["epoch"] - 1) for r in ROWS])
    text = gate_text().replace("epochs_from: 1", "epochs_from: 0")
    run = open_run(tmp_path, None, section_of(text))
    assert run.log.epochs == [0.0, 1.0, 2.0, 3.0, 4.0] and run.log.first_epoch == 0
    assert plain_gate(tmp_path, "log_complete", section=section_of(text)).passed
    with pytest.raises(RunDirError, match=r"metrics.csv: first epoch is 0; the gate file's run: says epochs_from: 1"):
        _ = open_run(tmp_path, None, section_of(gate_text())).log


def test_a_jsonl_log_of_steps_is_numbered_by_step(tmp_path: Path) -> None:
    rows = [{"step": 10 * i, "epoch": i // 3, "loss": 1.0 / (i + 1)} for i in range(1, 7)]
    rows += [{"step": 60, "epoch": 2, "val_loss": 0.4}]
    write_log(tmp_path, rows, "logs/steps.jsonl")
    run = open_run(tmp_path, None, section_of(gate_text("logs/steps.jsonl")))
    assert run.log.index == "step"  # a log of steps: its epochs repeat, its steps number the rows
    assert run.log.epochs == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 60.0]
    assert run.log.columns["epoch"][:3] == [0.0, 0.0, 1.0]  # the epoch stays a column, as logged
    assert math.isnan(run.log.columns["val_loss"][0]) and 10 in run.log.empty["val_loss"]
    values, steps = run.log.series("val_loss")  # a sparse column: only the rows that hold it
    assert values.tolist() == [0.4] and steps.tolist() == [60.0]


@pytest.mark.parametrize(("text", "message"), [
    ('{"epoch": 1, "val_loss": 0.5}\n{"epoch": 2, "val_loss": \n', r"metrics.jsonl line 2: invalid JSON"),
    ('{"epoch": 1, "val_loss": 0.5}\n[1, 2]\n', r"metrics.jsonl line 2: expected a JSON object per line, got list"),
    ('{"epoch": 1, "val_loss": "abc"}\n', r"metrics.jsonl line 1, column val_loss: 'abc' is not a number"),
    ('{"val_loss": 0.5}\n', r"metrics.jsonl: no 'epoch' or 'step' column to number the rows"),
    ("", r"metrics.jsonl: empty file"),
])
def test_a_broken_jsonl_log_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text(text)
    run = open_run(tmp_path, None, section_of(gate_text("logs/metrics.jsonl")))
    with pytest.raises(RunDirError, match=message) as err:
        _ = run.log
    assert "\n" not in str(err.value)


def test_a_log_outside_the_run_dir_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_log(tmp_path, ROWS, "secret.csv")
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "metrics.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(RunDirError, match="symlink leads outside the run dir"):
        _ = open_run(run_dir, None, section_of(gate_text())).log


def test_plain_without_a_run_section_says_where_the_log_must_be_named(tmp_path: Path) -> None:
    write_log(tmp_path, ROWS)
    with pytest.raises(RunDirError, match=r"a plain run is read where the gate file's run: section says") as err:
        open_run(tmp_path, "plain")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- best files and resume


def save_best(path: Path, **fields: Any) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": torch.nn.Linear(3, 2).state_dict(), **fields}, path)


def test_best_files_match_the_logs_best_epoch_and_value(tmp_path: Path) -> None:
    write_log(tmp_path, ROWS)
    save_best(tmp_path / "ckpt" / "best_val_loss.pt", epoch=5, monitor="val_loss", value=0.24)
    save_best(tmp_path / "ckpt" / "best_val_min_recall.pt", epoch=5, metrics={"val_min_recall": 0.55})
    r = plain_gate(tmp_path, "best_checkpoints")
    assert r.passed and r.value == "2 files", r.message
    save_best(tmp_path / "ckpt" / "best_val_loss.pt", epoch=4, monitor="val_loss", value=0.24)
    save_best(tmp_path / "ckpt" / "best_val_min_recall.pt", epoch=5, monitor="val_loss", value=0.55)
    r = plain_gate(tmp_path, "best_checkpoints")
    assert not r.passed and r.value == "2 of 2 wrong"
    assert "best_val_loss.pt: epoch = 4; needs 5, the best val_loss (min) epoch" in r.message
    assert "best_val_min_recall.pt: monitor = 'val_loss'; needs 'val_min_recall'" in r.message
    (tmp_path / "ckpt" / "best_val_loss.pt").unlink()
    r = plain_gate(tmp_path, "best_checkpoints")
    assert "ckpt/best_val_loss.pt: not found; needs one best checkpoint per tracked metric (val_loss, min)" in r.message


def test_resume_point_of_a_plain_loop_reads_model_state_dict(tmp_path: Path) -> None:
    import torch

    write_log(tmp_path, ROWS)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    last = tmp_path / "ckpt" / "last.pt"
    last.parent.mkdir()
    torch.save({"epoch": 5, "model_state_dict": net.state_dict(), "optimizer_state_dict": opt.state_dict()}, last)
    r = plain_gate(tmp_path, "resume_point")
    assert r.passed and r.message.endswith("ckpt/last.pt: epoch 5 with model, optimizer state (no RNG state: "
                                           "plain does not save it, so a resume is not bit-exact)"), r.message
    torch.save({"epoch": 4, "model_state_dict": net.state_dict(), "optimizer_state_dict": opt.state_dict()}, last)
    r = plain_gate(tmp_path, "resume_point")
    assert not r.passed and "ckpt/last.pt: epoch = 4; needs 5, the last epoch in" in r.message
    torch.save({"epoch": 5, "model_state_dict": net.state_dict()}, last)
    r = plain_gate(tmp_path, "resume_point")
    assert not r.passed and "ckpt/last.pt: no optimizer state; needs model, optimizer" in r.message


def test_split_integrity_reads_the_sections_splits_file(tmp_path: Path) -> None:
    write_log(tmp_path, ROWS)
    text = gate_text().replace("splits: splits.json", "splits: data/folds.json")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "folds.json").write_text(json.dumps({"train": [0, 1, 2], "val": [2, 3]}))
    r = plain_gate(tmp_path, "split_integrity", section=section_of(text))
    assert not r.passed and "indices in two splits = 1 (train & val: 2) in" in r.message
    assert "data/folds.json" in r.message


# --------------------------------------------------------------------------- the run: section


def test_run_section_is_a_run_section_on_the_gate_document() -> None:
    section = section_of(gate_text())
    assert section == RunSection(format="plain", log="logs/metrics.csv", epochs_from=1, checkpoints="ckpt/*.pt",
                                 best="ckpt/best_{metric}.pt",
                                 tracked=(("val_loss", "min"), ("val_min_recall", "max")),
                                 splits="splits.json", origin="plain.gates.yaml:2")
    only_log = section_of("run: {log: m.jsonl, tracked: [val_f1, val_loss]}\n")
    assert only_log.forced_format() == "plain" and only_log.tracked == (("val_f1", "max"), ("val_loss", "min"))
    assert section_of("run: {format: lightning, splits: s.json}\n").forced_format() == "lightning"
    document = parse_gate_text("run:\nexit_criteria: []\n", Path("g.gates.yaml"))
    assert document is not None and document.run is None  # an empty run: is no section


@pytest.mark.parametrize(("text", "message"), [
    ("run:\n  format: plain\n  logs: m.csv\n", r"^g.gates.yaml:3:3: unknown key run.logs \(did you mean 'log'\?\)$"),
    ("run:\n  format: plian\n  log: m.csv\n", r"^g.gates.yaml:2:11: run.format 'plian' is not a run format \(did you mean 'plain'\?\)$"),
    ("run:\n  format: plain\n", r"^g.gates.yaml:2:3: run: format: plain needs log:"),
    ("run:\n  format: lightning\n  best: 'b_{metric}.pt'\n", (r"^g.gates.yaml:3:3: run.best describes a plain run's "
                                                           r"files; it needs format: plain \(this run: says format: "
                                                           r"lightning\)$")),
    ("run:\n  log: m.csv\n  best: ckpt/best.pt\n", r"^g.gates.yaml:3:9: run.best 'ckpt/best.pt' must hold \{metric\}"),
    ("run:\n  log: m.csv\n  epochs_from: 2\n", r"^g.gates.yaml:3:16: run.epochs_from must be 0 or 1"),
    ("run:\n  log: ../m.csv\n", r"^g.gates.yaml:2:8: run.log '../m.csv' must stay inside the run dir"),
    ("run:\n  log: m.csv\n  tracked: [{metric: f1, mod: max}]\n", r"unknown key run.tracked.mod \(did you mean 'mode'\?\)"),
    ("run: [plain]\n", r"^g.gates.yaml:1:6: run must be a mapping with keys format, log,"),
])
def test_a_bad_run_section_is_one_collection_error_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(GateFileError, match=message) as err:
        parse_gate_text(text, Path("g.gates.yaml"))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- real runs of a plain loop

EXPECTED_RED = {  # fault -> (criterion, its one line)
    "collapsed": [("every_class_learned", r"^val_recall_3 = 0\.000 at epoch 4 \(final\); needs > 0$")],
    "nan": [("no_nan", r"^\w+ = nan at epoch 3; needs finite")],
    "no_best": [("best_checkpoint_per_metric", r"ckpt/best_val_loss\.pt: not found; needs one best checkpoint")],
}


def _session(pytester: pytest.Pytester, gates: str, runs: dict[str, Path], *extra: str,
             paths: tuple[str, ...] = ("plain.gates.yaml",)) -> pytest.RunResult:
    pytester.makefile(".gates.yaml", plain=gates)
    for label, path in runs.items():
        (pytester.path / label).symlink_to(path, target_is_directory=True)
    args = [*paths, "-rA", "-p", "no:cacheprovider", "--mlgates-archive=off", *extra]
    for label in runs:
        args += ["--run-dir", label]
    return pytester.runpytest_subprocess(*args, timeout=300)


def _outcomes(output: str) -> dict[tuple[str, str], str]:
    import re

    return {(c, run): s for s, c, run in re.findall(r"^(PASSED|FAILED|ERROR) \S*::(\w+)\[([\w-]+)\]", output, re.MULTILINE)}


def _line(output: str, criterion: str, run: str) -> str:
    import re

    match = re.search(rf"_ gate: {criterion}\[{run}\] _+\n(.*)\n", output)
    return match.group(1) if match else ""


@pytest.mark.slow
@pytest.mark.parametrize("log", ["logs/metrics.csv", "logs/metrics.jsonl"])
def test_a_plain_loop_green_when_healthy_red_on_each_fault_with_its_own_epochs(
        log: str, trainer_run: Callable[[str, str], Path], pytester: pytest.Pytester,
        monkeypatch: pytest.MonkeyPatch) -> None:
    need_package("sklearn")
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    runs = {fault: trainer_run("plain", fault) for fault in ("healthy", "collapsed", "nan", "no_best")}
    result = _session(pytester, gate_text(log), runs)
    output = result.stdout.str()
    verdicts = _outcomes(output)
    assert len(verdicts) == len(NAMES) * len(runs), output[-3000:]
    assert {c: verdicts[(c, "healthy")] for c in NAMES} == dict.fromkeys(NAMES, "PASSED"), output[-4000:]
    import re

    for fault, reds in EXPECTED_RED.items():
        for criterion, pattern in reds:
            assert verdicts[(criterion, fault)] == "FAILED", (fault, criterion, output[-3000:])
            assert re.search(pattern, _line(output, criterion, fault)), _line(output, criterion, fault)
    assert "INTERNALERROR" not in output and "Traceback" not in output


@pytest.mark.slow
def test_a_fifteen_epoch_plain_log_says_epoch_15_for_its_final_row(
        trainer_run: Callable[[str, str], Path], pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 14: a 1-based 15-epoch log was read as Lightning's and reported epoch 16."""
    need_package("sklearn")
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    result = _session(pytester, gate_text(), {"collapsed": trainer_run("plain-15", "collapsed")}, "-k", "every_class")
    result.assert_outcomes(failed=1)
    assert _line(result.stdout.str(), "every_class_learned", "collapsed") == \
        "val_recall_3 = 0.000 at epoch 15 (final); needs > 0"


@pytest.mark.slow
def test_the_run_fixture_reads_a_plain_run_as_its_gate_file_does(
        trainer_run: Callable[[str, str], Path], pytester: pytest.Pytester) -> None:
    need_package("sklearn")
    pytester.makepyfile(test_plain_fixture="""
        def test_fixture(run):
            assert run.format == "plain" and run.log.epochs == [1.0, 2.0, 3.0, 4.0]
            assert run.tracked == [("val_loss", "min"), ("val_min_recall", "max")]
            assert run.checkpoint("best_val_loss")["monitor"] == "val_loss"
    """)
    result = _session(pytester, gate_text(), {"healthy": trainer_run("plain", "healthy")}, "-k", "fixture or no_nan",
                      paths=("plain.gates.yaml", "test_plain_fixture.py"))
    result.assert_outcomes(passed=2)


@pytest.mark.slow
def test_prove_turns_every_criterion_of_a_plain_run_red(
        trainer_run: Callable[[str, str], Path], tmp_path: Path) -> None:
    need_package("sklearn")
    import shutil

    run = Path(shutil.copytree(trainer_run("plain", "healthy"), tmp_path / "run"))
    gates = tmp_path / "plain.gates.yaml"
    gates.write_text(gate_text())
    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "prove", str(run), "--gates", str(gates),
                           "--json"], capture_output=True, text=True, timeout=900, env=trainer_env(),
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert sorted(report["proven"]) == sorted(NAMES), json.dumps(report["criteria"], indent=1)[-4000:]
    assert report["defects"] == report["no_mutation"] == report["mutation_failed"] == []
    by_name = {c["criterion"]: c for c in report["criteria"]}
    assert by_name["no_nan"]["mutation"] == "NaN written into val_loss (last epoch)"
    assert by_name["resumable"]["mutation"] == "optimizer state removed from ckpt/last.pt"
