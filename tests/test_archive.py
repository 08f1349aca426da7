"""The RED/GREEN archive, exercised through real pytest sessions (pytester, xdist).

The sessions here run small Python tests that set the ``mlgates.*`` user properties the
way gate items do, and read their values from a file in the run dir, so "fixing the run"
is a real change of the run's files.  ``test_archive_gates.py`` does the same with real
gate files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.fingerprint import fingerprint
from pytest_mlgates.ledger import LEDGER_NAME, read_ledger

# Registers the archive the way plugin.py does; harmless once plugin.py does it itself.
CONFTEST = """
from pytest_mlgates import archive

def pytest_addoption(parser):
    try:
        archive.add_options(parser.getgroup("mlgates"))
    except ValueError:  # plugin.py added it already
        pass

def pytest_configure(config):
    archive.register(config)
"""

GATE_TESTS = '''
import json, pathlib, pytest

RUN = {run!r}
CRITERIA = {criteria!r}

@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_gate(request, name):
    metrics = json.loads((pathlib.Path(RUN) / "metrics.json").read_text())
    value, floor = metrics[name], CRITERIA[name]
    ok = value > floor
    message = f"{{name}} = {{value}}; needs > {{floor}}"
    request.node.user_properties.extend([
        ("mlgates.criterion", name), ("mlgates.gate", "check"), ("mlgates.run", RUN),
        ("mlgates.value", str(value)), ("mlgates.threshold", f"> {{floor}}"),
        ("mlgates.status", "GREEN" if ok else "RED"), ("mlgates.message", message)])
    assert ok, message
'''

FLOORS = {"val_recall_3": 0.0, "val_accuracy": 0.5, "val_macro_f1": 0.5}
GOOD = {"val_recall_3": 0.4, "val_accuracy": 0.9, "val_macro_f1": 0.8}


def make_run(root: Path, metrics: dict[str, float] | None = None) -> Path:
    """A small run dir: metrics the gate tests read, a config and a 'checkpoint'."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps(metrics or GOOD))
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "checkpoints" / "final.pt").write_bytes(bytes(range(256)) * 64)
    return run


def setup_session(pytester: pytest.Pytester, run: Path, criteria: dict[str, float]) -> None:
    pytester.makeconftest(CONFTEST)
    name_run_dir(pytester, run)
    pytester.makepyfile(test_gates=GATE_TESTS.format(run=str(run), criteria=criteria))


def name_run_dir(pytester: pytest.Pytester, run: Path) -> None:
    """Name the run dir in the ini file, as ``--run-dir`` would: the archive fingerprints the
    run dirs it knows before the first item, and a session on any other is void."""
    pytester.makeini(f"[pytest]\nmlgates_run_dirs = {run}\n")


def set_metrics(run: Path, **values: float) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(values)
    (run / "metrics.json").write_text(json.dumps(metrics))


def ledger_entries(run: Path) -> list[dict[str, Any]]:
    ledger = read_ledger(run / "acceptance" / LEDGER_NAME)
    assert ledger.skipped == []
    return ledger.entries


def archive_dirs(run: Path) -> list[Path]:
    return sorted(p for p in (run / "acceptance").iterdir()
                  if p.is_dir() and not p.name.startswith("."))


@pytest.fixture
def run(pytester: pytest.Pytester) -> Path:
    path = make_run(pytester.path)
    setup_session(pytester, path, FLOORS)
    return path


def test_green_session_writes_one_line_and_one_complete_archive(
    pytester: pytest.Pytester, run: Path
) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)

    [entry] = ledger_entries(run)
    assert entry["verdict"] == "GREEN"
    assert entry["fingerprint"] == fingerprint(run)[0]
    assert entry["files"]["checkpoints"] == "dir"  # directories count too
    assert set(entry["files"]) == {"metrics.json", "config.yaml", "checkpoints",
                                   "checkpoints/final.pt"}
    assert entry["format"] == 2 and entry["partial"] is False and entry["void"] is None
    assert entry["counts"]["GREEN"] == 3 and entry["counts"]["total"] == 3
    assert {c["name"] for c in entry["criteria"]} == set(FLOORS)
    assert {c["status"] for c in entry["criteria"]} == {"GREEN"}
    assert entry["pytest_args"][:2] == ["-p", "no:cacheprovider"]  # pytester adds --basetemp
    assert entry["plugin_version"]
    assert "git" in entry

    [archive] = archive_dirs(run)
    assert archive.name.endswith("-green") and entry["archive_dir"] == archive.name
    assert sorted(p.name for p in archive.iterdir()) == [
        "junit.xml", "log.txt", "report.html", "results.json", "summary.md"]
    log = (archive / "log.txt").read_text()
    assert "3 passed" in log and "test_gates.py" in log and archive.name in log
    results = json.loads((archive / "results.json").read_text())
    by_name = {c["name"]: c for c in results["criteria"]}
    assert by_name["val_accuracy"]["value"] == "0.9"
    assert by_name["val_accuracy"]["threshold"] == "> 0.5"
    assert by_name["val_accuracy"]["gate"] == "check"
    assert by_name["val_accuracy"]["duration"] >= 0
    summary = (archive / "summary.md").read_text()
    assert "| criterion | gate | value | threshold | status |" in summary
    assert "| val_recall_3 | check | 0.4 | > 0.0 | GREEN |" in summary
    # the archive itself is not part of the fingerprint
    assert fingerprint(run)[0] == entry["fingerprint"]


def test_red_session_records_the_red_criterion(pytester: pytest.Pytester, run: Path) -> None:
    set_metrics(run, val_recall_3=0.0)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    [entry] = ledger_entries(run)
    assert entry["verdict"] == "RED"
    status = {c["name"]: c["status"] for c in entry["criteria"]}
    assert status == {"val_recall_3": "RED", "val_accuracy": "GREEN", "val_macro_f1": "GREEN"}
    [archive] = archive_dirs(run)
    assert archive.name.endswith("-red")
    results = json.loads((archive / "results.json").read_text())
    red = [c for c in results["criteria"] if c["status"] == "RED"]
    assert red[0]["message"] == "val_recall_3 = 0.0; needs > 0.0"


def test_skipped_or_unverified_criterion_makes_the_session_red(
    pytester: pytest.Pytester,
) -> None:
    run = make_run(pytester.path)
    pytester.makeconftest(CONFTEST)
    name_run_dir(pytester, run)
    pytester.makepyfile(test_gates=f'''
import pytest
RUN = {str(run)!r}
def test_truth(request):
    request.node.user_properties += [("mlgates.criterion", "recall ok"),
        ("mlgates.run", RUN), ("mlgates.status", "UNVERIFIED")]
def test_skipped(request):
    request.node.user_properties += [("mlgates.criterion", "shortcut"), ("mlgates.run", RUN)]
    pytest.skip("no images")
def test_green(request):
    request.node.user_properties += [("mlgates.criterion", "ok"), ("mlgates.run", RUN),
        ("mlgates.status", "GREEN")]
''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2, skipped=1)
    [entry] = ledger_entries(run)
    assert entry["verdict"] == "RED"
    assert {c["name"]: c["status"] for c in entry["criteria"]} == {
        "recall ok": "UNVERIFIED", "shortcut": "SKIPPED", "ok": "GREEN"}


def test_session_without_acceptance_items_archives_nothing(pytester: pytest.Pytester) -> None:
    run = make_run(pytester.path)
    pytester.makeconftest(CONFTEST)
    name_run_dir(pytester, run)
    pytester.makepyfile("def test_plain():\n    assert True\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not (run / "acceptance").exists()


def test_archive_off_writes_nothing(pytester: pytest.Pytester, run: Path) -> None:
    pytester.runpytest("-p", "no:cacheprovider", "--mlgates-archive=off").assert_outcomes(
        passed=3)
    assert not (run / "acceptance").exists()


def test_archive_dir_option_moves_the_archive(pytester: pytest.Pytester, run: Path) -> None:
    elsewhere = pytester.path / "evidence"
    pytester.runpytest("-p", "no:cacheprovider", f"--mlgates-archive={elsewhere}")
    assert not (run / "acceptance").exists()
    ledger = read_ledger(elsewhere / run.name / LEDGER_NAME)
    [entry] = ledger.entries
    assert (elsewhere / run.name / entry["archive_dir"] / "results.json").is_file()


def test_github_step_summary_is_appended(
    pytester: pytest.Pytester, run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step_summary = pytester.path / "step_summary.md"
    step_summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    pytester.runpytest("-p", "no:cacheprovider")
    text = step_summary.read_text()
    assert text.startswith("# earlier step\n")
    assert "is GREEN" in text and "| val_macro_f1 | check | 0.8 | > 0.5 | GREEN |" in text


def test_archived_junit_is_well_formed(pytester: pytest.Pytester, run: Path) -> None:
    set_metrics(run, val_accuracy=0.1)
    pytester.runpytest("-p", "no:cacheprovider")
    [archive] = archive_dirs(run)
    root = ET.parse(archive / "junit.xml").getroot()
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    cases = suite.findall("testcase")
    assert len(cases) == 3
    failing = [c for c in cases if c.find("failure") is not None]
    assert len(failing) == 1 and "val_accuracy = 0.1" in failing[0].find("failure").get(
        "message")
    props = {p.get("name"): p.get("value") for p in failing[0].iter("property")}
    assert props["mlgates.status"] == "RED" and props["mlgates.threshold"] == "> 0.5"
    for case in cases:
        assert float(case.get("time")) >= 0 and case.get("classname") and case.get("name")


@pytest.mark.slow
def test_xdist_two_workers_give_one_line_and_one_archive(
    pytester: pytest.Pytester, run: Path
) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=3)
    assert "2 workers" in result.stdout.str()
    [entry] = ledger_entries(run)
    assert entry["counts"]["total"] == 3 and entry["verdict"] == "GREEN"
    [archive] = archive_dirs(run)
    assert "2 workers" in (archive / "log.txt").read_text()


@pytest.mark.slow
def test_twenty_concurrent_sessions_leave_twenty_whole_lines(
    pytester: pytest.Pytester, run: Path
) -> None:
    # Plugin autoload off keeps 20 interpreters cheap on two cores; -p loads mlgates alone
    # (its ini names the run dir, which the archive fingerprints before the first item).
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "pytest_mlgates.plugin", "test_gates.py"]
    procs = [subprocess.Popen(command, cwd=pytester.path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for _ in range(20)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 20, errors
    raw = (run / "acceptance" / LEDGER_NAME).read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 21
    entries = [json.loads(line) for line in lines[:-1]]
    assert all(e["verdict"] == "GREEN" and e["counts"]["total"] == 3 for e in entries)
    assert len({e["archive_dir"] for e in entries}) == 20
    assert len(archive_dirs(run)) == 20
    assert not [p for p in (run / "acceptance").iterdir() if p.name.startswith(".tmp-")]


def test_torn_last_line_is_skipped_and_the_next_session_lands_whole(
    pytester: pytest.Pytester, run: Path
) -> None:
    pytester.runpytest("-p", "no:cacheprovider")
    ledger = run / "acceptance" / LEDGER_NAME
    whole = ledger.read_bytes()
    with open(ledger, "ab") as handle:  # what a SIGKILL halfway through a write leaves
        handle.write(whole[: len(whole) // 2])
    torn = read_ledger(ledger)
    assert len(torn.entries) == 1 and len(torn.skipped) == 1
    assert "line 2" in torn.skipped[0]

    set_metrics(run, val_accuracy=0.2)
    pytester.runpytest("-p", "no:cacheprovider")
    after = read_ledger(ledger)
    assert [e["verdict"] for e in after.entries] == ["GREEN", "RED"]
    assert len(after.skipped) == 1


def test_importing_archive_and_cli_stays_light(pytester: pytest.Pytester) -> None:
    code = ("import sys, pytest_mlgates.archive, pytest_mlgates.cli, "
            "pytest_mlgates.fingerprint; "
            "print(sorted(m for m in ('torch', 'numpy', 'yaml', 'sklearn', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_gate_file_that_does_not_collect_is_a_red_session(
    pytester: pytest.Pytester, run: Path
) -> None:
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)
    pytester.makefile(".gates.yaml", broken="exit_criteria:\n  - name: x\n    check: 'val_loss <'\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--run-dir", str(run))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    entries = ledger_entries(run)
    assert [e["verdict"] for e in entries] == ["GREEN", "RED"]
    assert entries[-1]["counts"]["collection_errors"] == 1
    assert entries[-1]["archive_dir"].endswith("-red")
