"""examples/wine_project used as its README says, in a fresh venv with the built wheel.

The project's own scripts train its runs (a plain PyTorch loop and a Lightning variant,
healthy and with a fault injected), then the venv's ``pytest`` judges them with the
project's gate files and ``mlgates prove`` shows each criterion can fail:

- healthy runs: every criterion GREEN, and ``mlgates verdict`` ACCEPTED;
- ``--drop-class 2``: ``every_class_learned`` RED on ``val_recall_2 = 0.000`` at the log's
  final epoch (15 in the plain log, 14 in Lightning's 0-based metrics.csv);
- ``--nan-at-epoch``: ``no_nan`` RED at the epoch the log itself gives the first NaN row
  (epoch 3 of the plain log, epoch 2 of Lightning's);
- ``mlgates prove``: every criterion of both gate files turns RED under its mutation.

Epoch numbers are each log's own (SPEC, "Your own training code").

One gate session per kind judges its healthy, collapsed and NaN runs together (three
``--run-dir``; each item's run is its ``mlgates.run`` JUnit property), shared by the tests
of that kind: the archive judges each run of a session on its own, so the healthy run is
still ACCEPTED beside the failing ones.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from user_venv import UserVenv, junit_results_by_run

from conftest import copy_run

pytestmark = pytest.mark.slow

GATE_FILES = {"plain": "acceptance/plain.gates.yaml", "lightning": "acceptance/lightning.gates.yaml"}
CRITERIA = ("no_nan", "no_class_collapsed", "every_class_learned", "val_loss_improves", "good_enough",
            "one_best_checkpoint_per_tracked_metric", "splits_disjoint", "best_model_gives_a_softmax")
METRICS_CSV = {"plain": "logs/metrics.csv", "lightning": "metrics.csv"}

KINDS = ["plain", "lightning"]


# the runs one gate session per kind judges together (one --run-dir each)
GATED_FAULTS = ("healthy", "collapsed", "nan")


@dataclass(frozen=True)
class GateSession:
    """``pytest acceptance/<kind>.gates.yaml --run-dir HEALTHY --run-dir COLLAPSED --run-dir NAN``
    from the project, as a user types it: its exit code and output, and per run (a copy of
    the run the project's script trained) each criterion's (status, line) from the JUnit XML."""

    returncode: int
    output: str
    runs: dict[str, Path]
    results: dict[str, dict[str, tuple[str, str]]]


@pytest.fixture(scope="session")
def gate_session(full_venv: UserVenv, wine_project: Path, wine_run: Callable[[str, str], Path],
                 ) -> Callable[[str], GateSession]:
    """Factory: ``gate_session(kind)`` -> the one gate session over that kind's healthy,
    collapsed and NaN runs, once per test session (xdist workers share it behind a file
    lock): one pytest and torch start-up for the three runs, not one per run."""
    from filelock import FileLock

    def make(kind: str) -> GateSession:
        folder = wine_project / "gated" / kind
        done = folder.parent / f"{kind}.json"
        runs = {fault: folder / fault for fault in GATED_FAULTS}
        xml = folder / "junit.xml"
        folder.parent.mkdir(exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                for fault, run in runs.items():  # the session archives its verdicts into each run
                    copy_run(wine_run(kind, fault), run)
                proc = full_venv.run(
                    ["pytest", GATE_FILES[kind], *(a for run in runs.values() for a in ("--run-dir", run)),
                     "-p", "no:cacheprovider", f"--junitxml={xml}"], cwd=wine_project)
                output = proc.stdout + proc.stderr
                if not xml.exists():
                    raise RuntimeError(f"the {kind} gate session wrote no JUnit XML (exit {proc.returncode}): "
                                       f"{output[-3000:]}")
                done.write_text(json.dumps({"returncode": proc.returncode, "output": output}))
        recorded = json.loads(done.read_text())
        by_run = junit_results_by_run(xml)
        results = {fault: {name: result for (label, name), result in by_run.items() if label == str(run)}
                   for fault, run in runs.items()}
        return GateSession(recorded["returncode"], recorded["output"], runs, results)

    return make


def log_epochs(kind: str, run: Path) -> tuple[int, int]:
    """(final epoch, first epoch with a NaN val_loss) as the run's own log numbers them."""
    with open(run / METRICS_CSV[kind], newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_loss") not in (None, "")]
    nan = [int(r["epoch"]) for r in rows if math.isnan(float(r["val_loss"]))]
    return int(rows[-1]["epoch"]), (nan[0] if nan else -1)


@pytest.mark.parametrize("kind", KINDS)
def test_healthy_run_is_green_and_accepted(
        kind: str, full_venv: UserVenv, wine_project: Path, gate_session: Callable[[str], GateSession]) -> None:
    session = gate_session(kind)
    # exit 1: the session judged the faulty runs too; "tests failed", not an error or usage
    assert session.returncode == 1, session.output
    results = session.results["healthy"]
    assert {name: status for name, (status, _) in results.items()} == dict.fromkeys(CRITERIA, "GREEN"), \
        session.output
    verdict = full_venv.run(["mlgates", "verdict", session.runs["healthy"]], cwd=wine_project)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "ACCEPTED" in verdict.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_collapsed_class_is_red_at_the_logs_final_epoch(
        kind: str, gate_session: Callable[[str], GateSession]) -> None:
    session = gate_session(kind)
    final, _ = log_epochs(kind, session.runs["collapsed"])
    assert final == (15 if kind == "plain" else 14)  # 15 epochs, as each log counts them
    assert session.returncode == 1, session.output
    results = session.results["collapsed"]
    assert set(results) == set(CRITERIA), session.output
    status, line = results["every_class_learned"]
    assert status == "RED"
    assert f"val_recall_2 = 0.000 at epoch {final} (final)" in line, line
    # the fault is a collapsed class: the file-level criteria still hold
    for criterion in ("no_nan", "splits_disjoint", "best_model_gives_a_softmax"):
        assert results[criterion][0] == "GREEN", (criterion, results[criterion])


@pytest.mark.parametrize("kind", KINDS)
def test_nan_is_red_at_the_logs_own_epoch(kind: str, gate_session: Callable[[str], GateSession]) -> None:
    session = gate_session(kind)
    _, first_nan = log_epochs(kind, session.runs["nan"])
    assert first_nan == (3 if kind == "plain" else 2)  # --nan-at-epoch, in each log's numbering
    assert session.returncode == 1, session.output
    results = session.results["nan"]
    assert set(results) == set(CRITERIA), session.output
    status, line = results["no_nan"]
    assert status == "RED"
    assert re.search(rf"= nan at epoch {first_nan}\b", line), line
    assert "\n" not in line.strip() and "Traceback" not in session.output


@pytest.mark.parametrize("kind", KINDS)
def test_prove_turns_every_criterion_red(
        kind: str, full_venv: UserVenv, wine_project: Path, wine_run: Callable[[str, str], Path],
        copy_run: Callable[[Path, Path], Path], tmp_path: Path) -> None:
    run = copy_run(wine_run(kind, "healthy"), tmp_path / "run")
    # --jobs 1: one pytest subprocess per tier instead of two (pytest and torch start once;
    # the same proof, and the tests' own workers already keep both cores busy)
    proc = full_venv.run(["mlgates", "prove", run, "--gates", GATE_FILES[kind], "--json", "--jobs", "1"],
                         cwd=wine_project, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    outcomes = {c["criterion"]: c["outcome"] for c in report["criteria"]}
    assert outcomes == dict.fromkeys(CRITERIA, "RED"), report


def test_preflight_of_the_users_own_code_is_green(full_venv: UserVenv, wine_project: Path) -> None:
    """The project's conftest hands its code over (mlgates_subject): every check it can feed
    passes on its real loaders, its model and its own step loop."""
    proc = full_venv.run(["pytest", "-m", "preflight", "-p", "no:cacheprovider", "-v", "-rs"], cwd=wine_project)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    outcomes = dict(re.findall(r"conftest.py::preflight\[(\w+)\] (PASSED|FAILED|SKIPPED|ERROR)", out))
    assert {c for c, s in outcomes.items() if s == "PASSED"} >= {
        "subject_builds", "loaders_first_batch", "no_nan_or_inf", "split_integrity", "forward_softmax",
        "loss_at_init", "overfit_small_batch", "logged_metric_names", "grad_accumulation"}, out
    assert {c for c, s in outcomes.items() if s == "SKIPPED"} == {"shortcut_probe", "run_dir_writable"}, out


@pytest.mark.parametrize("kind", KINDS)
def test_a_collapsing_run_is_stopped_in_flight(
        kind: str, full_venv: UserVenv, wine_project: Path, wine_run: Callable[[str, str], Path]) -> None:
    """``--gates`` judges the gate file's stage: inflight criteria after every epoch (Gates in
    the plain loop, GatesCallback in Lightning, after_epoch=2): class 2 never learnt stops
    the run within two epochs of after_epoch, the stop is recorded, and the verdict says so."""
    run = wine_run(kind, "gated")
    final, _ = log_epochs(kind, run)
    first = 1 if kind == "plain" else 0
    assert final - first + 1 <= 3, final  # completed epochs: after_epoch 2, stopped by the next
    stop = json.loads((run / "mlgates_inflight.json").read_text(encoding="utf-8"))
    assert stop["status"] == "aborted_by_gate" and stop["criterion"] == "no_class_collapsed", stop
    assert "val_recall_2 = 0.000" in stop["reason"], stop
    verdict = full_venv.run(["mlgates", "verdict", run], cwd=wine_project)
    assert verdict.returncode != 0 and "no_class_collapsed" in verdict.stdout, verdict.stdout
