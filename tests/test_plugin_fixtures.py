"""The ``run``, ``gate_values`` fixtures and the ``mlgates`` marker for Python acceptance tests."""

from __future__ import annotations

import pytest
from test_plugin_synthetic import make_gate_project


@pytest.fixture
def gate_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_gate_project(pytester)


PY_TESTS = """
import pytest

@pytest.mark.mlgates
def test_recall(run, gate_values):
    assert run.final.val_loss == 0.4
    assert gate_values("final.val_loss") == 0.4
    assert gate_values("min(val_loss) < first(val_loss)") is True
    gate_values.require("final.val_recall_1 > 0")

@pytest.mark.mlgates("loss_curve_has_three_epochs")
def test_length(run):
    assert len(run.log.columns["epoch"]) == 3

def test_plain_has_no_row():
    pass
"""


def test_fixtures_run_once_per_run_dir_and_get_rows(gate_project: pytest.Pytester) -> None:
    gate_project.makepyfile(test_accept=PY_TESTS)
    result = gate_project.runpytest(
        "test_accept.py", "-v", "--run-dir", "runs/good", "--run-dir", "runs/collapsed")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([
        "*test_accept.py::test_recall[[]runs/good[]] PASSED*",
        "*test_accept.py::test_recall[[]runs/collapsed[]] FAILED*",
    ])
    result.stdout.fnmatch_lines([
        "*_ test_recall[[]runs/collapsed[]] _*",
        "val_recall_1 = 0.000 at epoch 3 (final); needs > 0",
    ])
    result.stdout.fnmatch_lines([
        "*= mlgates =*",
        "criterion * run * value * threshold * status",
        "loss_curve_has_three_epochs * runs/collapsed * GREEN",
        "loss_curve_has_three_epochs * runs/good * GREEN",
        "test_recall * runs/collapsed * RED",
        "test_recall * runs/good * GREEN",
        "4 criteria: 3 GREEN, 1 RED, 0 UNVERIFIED, 0 ERROR",
    ])
    assert "test_plain_has_no_row" not in result.stdout.str().split("= mlgates =")[1]


def test_run_fixture_without_run_dir_fails_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(run):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["no run dir: pass --run-dir DIR*"])
    assert "Traceback" not in result.stdout.str()
