"""Running items: the one failure line, UNVERIFIED truths, strict mode, no run dir, the table."""

from __future__ import annotations

import pytest
from test_plugin_synthetic import make_gate_project


@pytest.fixture
def gate_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_gate_project(pytester)


def assert_no_traceback(result: pytest.RunResult) -> None:
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out
    assert "INTERNALERROR" not in out
    assert "pytest_mlgates" not in out  # no path into the plugin's own files


def test_red_criterion_fails_with_one_line(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest("--run-dir", "runs/collapsed", "-rfs")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "*_ gate: minority_not_collapsed[[]runs/collapsed[]] _*",
        "val_recall_1 = 0.000 at epoch 3 (final); needs > 0",
        "SKIPPED [[]1[]] acc.gates.yaml:4: UNVERIFIED: Nobody looked at the confusion matrix (no check)",
    ])
    assert_no_traceback(result)


def test_green_run_passes(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest("--run-dir", "runs/good")
    result.assert_outcomes(passed=3, skipped=1)


def test_strict_mode_fails_unverified_truths(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest("--run-dir", "runs/good", "--mlgates-strict")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*_ gate: nobody_looked_at_the_confusion_matrix[[]runs/good[]] _*",
        "UNVERIFIED: Nobody looked at the confusion matrix (no check); fails under --mlgates-strict",
        "nobody_looked_at_the_confusion_matrix * runs/good * UNVERIFIED",
    ])
    assert_no_traceback(result)


def test_no_run_dir_fails_clearly(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest()
    result.assert_outcomes(failed=3, skipped=1)
    result.stdout.fnmatch_lines([
        "*_ gate: no_nan _*",
        "no run dir: pass --run-dir DIR (or set mlgates_run_dirs in the ini file)",
    ])
    assert_no_traceback(result)


def test_missing_and_malformed_run_dirs_fail_each_item_in_one_line(
    gate_project: pytest.Pytester,
) -> None:
    broken = gate_project.path / "runs" / "broken"
    broken.mkdir()
    (broken / "training_log.csv").write_text("epoch,val_loss\n1,0.5\n2,oops\n")
    result = gate_project.runpytest("--run-dir", "runs/missing", "--run-dir", "runs/broken")
    result.assert_outcomes(failed=6, skipped=2)
    result.stdout.fnmatch_lines([
        "*_ gate: no_nan[[]runs/missing[]] _*",
        "*/runs/missing: run dir not found",
        "*_ gate: no_nan[[]runs/broken[]] _*",
        "*/runs/broken/training_log.csv line 3, column val_loss: 'oops' is not a number",
    ])
    assert_no_traceback(result)


def test_summary_table_lists_every_criterion(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest("--run-dir", "runs/good", "--run-dir", "runs/collapsed")
    result.stdout.fnmatch_lines([
        "*= mlgates =*",
        "criterion * run * value * threshold * status",
        "minority_not_collapsed * runs/collapsed * 0.000 * > 0 * RED",
        "minority_not_collapsed * runs/good * 0.700 * > 0 * GREEN",
        "no_nan * runs/collapsed * GREEN",
        "no_nan * runs/good * GREEN",
        "nobody_looked_at_the_confusion_matrix * runs/collapsed * UNVERIFIED",
        "nobody_looked_at_the_confusion_matrix * runs/good * UNVERIFIED",
        "val_loss_decreases * runs/collapsed * 0.400 * < 1.000 (first(val_loss)) * GREEN",
        "val_loss_decreases * runs/good * GREEN",
        "8 criteria: 5 GREEN, 1 RED, 2 UNVERIFIED, 0 ERROR",
    ])


def test_summary_functions_on_plain_reports() -> None:
    from pytest_mlgates.summary import collect_records, format_markdown, format_table

    class Report:
        def __init__(self, nodeid: str, status: str, when: str = "call") -> None:
            self.nodeid, self.when = nodeid, when
            self.user_properties = [("mlgates.criterion", nodeid.split("::")[1]),
                                    ("mlgates.run", "r"), ("mlgates.value", "0.5"),
                                    ("mlgates.threshold", "> 0 | x"), ("mlgates.status", status)]

    stats = {"failed": [Report("f.gates.yaml::b", "RED")],
             "passed": [Report("f.gates.yaml::a", "GREEN"), Report("t.py::plain", "GREEN")],
             "": [Report("f.gates.yaml::a", "GREEN", when="teardown")]}
    stats["passed"][1].user_properties = []  # an ordinary test: no row
    records = collect_records(stats)
    assert [(r["criterion"], r["status"]) for r in records] == [("a", "GREEN"), ("b", "RED")]
    table = format_table(records).splitlines()
    assert table[0].split() == ["criterion", "run", "value", "threshold", "status"]
    assert table[2].split() == ["a", "r", "0.5", ">", "0", "|", "x", "GREEN"]
    assert table[-1] == "2 criteria: 1 GREEN, 1 RED, 0 UNVERIFIED, 0 ERROR"
    markdown = format_markdown(records)
    assert "| b | r | 0.5 | > 0 \\| x | **RED** |" in markdown
