"""Sweeps under xdist: one run dir's items stay on one worker, with the same outcomes.

Real sessions (subprocesses) on four small run dirs: serial and ``-n 2`` give the same
per-item outcomes and the same archive verdicts, and under ``-n 2`` every run's items ran
on one worker (a conftest records which worker ran what).  With fewer run dirs than
workers, or a ``--dist`` the user chose, xdist's own scheduling is left alone.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from pytest_mlgates.ledger import read_ledger

GATES = """exit_criteria:
  - name: loss_falls
    check: "min(val_loss) < first(val_loss)"
  - name: loss_small
    check: "last(val_loss) < 0.5"
  - name: finite
    gate: finite_log
  - name: complete
    gate: log_complete
"""
GOOD = "epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.6,0.4\n"
HIGH = "epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.6,0.7\n"  # loss_small RED
WHO_RAN = """
import os

def pytest_runtest_setup(item):
    with open(os.path.join(os.path.dirname(__file__), "who_ran.txt"), "a") as handle:
        handle.write(f"{os.environ.get('PYTEST_XDIST_WORKER', '-')} {item.nodeid}\\n")
"""
RUNS = ("runs/a", "runs/b", "runs/c", "runs/d")


@pytest.fixture
def sweep(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # under an outer ``make test -n 2`` the sessions below would inherit its worker's name
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    pytester.makefile(".gates.yaml", acc=GATES)
    pytester.makeconftest(WHO_RAN)
    for index, rel in enumerate(RUNS):
        run = pytester.path / rel
        run.mkdir(parents=True)
        (run / "training_log.csv").write_text(HIGH if index == 2 else GOOD)
    return pytester


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """node id -> PASSED/FAILED/..., from ``-rA``'s short summary."""
    found = {}
    for line in result.stdout.lines:
        match = re.match(r"(PASSED|FAILED|ERROR|SKIPPED) (\S+)", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def workers_by_run(root: Path) -> dict[str, set[str]]:
    ran: dict[str, set[str]] = collections.defaultdict(set)
    for line in (root / "who_ran.txt").read_text().splitlines():
        worker, nodeid = line.split(" ", 1)
        ran[nodeid[nodeid.rindex("[") + 1:-1]].add(worker)
    (root / "who_ran.txt").unlink()
    return dict(ran)


def run_args(*runs: str) -> list[str]:
    args = ["acc.gates.yaml", "-rA", "-p", "no:cacheprovider"]
    for run in runs:
        args += ["--run-dir", run]
    return args


@pytest.mark.slow
def test_a_sweep_under_xdist_keeps_each_run_on_one_worker_with_the_same_outcomes(
    sweep: pytest.Pytester,
) -> None:
    serial = sweep.runpytest_subprocess(*run_args(*RUNS))
    serial.assert_outcomes(passed=15, failed=1)
    assert all(workers == {"-"} for workers in workers_by_run(sweep.path).values())
    caches = [sweep.path / rel / "acceptance" / "fingerprint-cache.json" for rel in RUNS]
    for cache in caches:
        cache.unlink()
    distributed = sweep.runpytest_subprocess(*run_args(*RUNS), "-n", "2")
    distributed.assert_outcomes(passed=15, failed=1)
    assert outcomes(distributed) == outcomes(serial) and len(outcomes(serial)) == 16
    placement = workers_by_run(sweep.path)
    assert sorted(placement) == list(RUNS)
    assert all(len(workers) == 1 for workers in placement.values()), placement
    assert set().union(*placement.values()) == {"gw0", "gw1"}, placement  # both worked
    assert all(cache.is_file() for cache in caches)  # written by the controller
    # one ledger line per run and session, the same verdicts
    for rel in RUNS:
        lines = read_ledger(sweep.path / rel / "acceptance" / "ledger.jsonl").entries
        assert [line["verdict"] for line in lines] == ["RED" if rel == "runs/c" else "GREEN"] * 2
        assert lines[0]["fingerprint"] == lines[1]["fingerprint"]


@pytest.mark.slow
def test_fewer_runs_than_workers_or_a_chosen_dist_is_left_to_xdist(
    sweep: pytest.Pytester,
) -> None:
    one = sweep.runpytest_subprocess(*run_args("runs/a"), "-n", "2")
    one.assert_outcomes(passed=4)
    assert set(workers_by_run(sweep.path)) == {"runs/a"}
    # --dist loadfile: the whole gate file (every run) on one worker, as the user asked
    chosen = sweep.runpytest_subprocess(*run_args(*RUNS), "-n", "2", "--dist", "loadfile")
    chosen.assert_outcomes(passed=15, failed=1)
    assert len(set().union(*workers_by_run(sweep.path).values())) == 1


def test_run_scheduling_splits_by_the_longest_matching_run_label() -> None:
    pytest.importorskip("xdist")
    from pytest_mlgates.sweep import RunScheduling

    scheduler = RunScheduling.__new__(RunScheduling)
    scheduler._suffixes = sorted(["[b]", "[runs/b]", "[x[1]]"], key=len, reverse=True)
    scheduler._scopes = {}
    assert scheduler._split_scope("acc.gates.yaml::loss[runs/b]") == "[runs/b]"
    assert scheduler._split_scope("acc.gates.yaml::loss[b]") == "[b]"
    assert scheduler._split_scope("acc.gates.yaml::loss[x[1]]") == "[x[1]]"
    assert scheduler._split_scope("tests/test_x.py::test_y") == "tests/test_x.py::test_y"
