"""``-n 2`` gives the same outcomes and the same table as a plain run; ``-p no:xdist`` works."""

from __future__ import annotations

import pytest
from test_plugin_synthetic import make_gate_project


@pytest.fixture
def gate_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_gate_project(pytester)


ARGS = ("--run-dir", "runs/good", "--run-dir", "runs/collapsed", "-p", "no:cacheprovider")


def outcome_and_table(result: pytest.RunResult) -> tuple[dict[str, int], list[str]]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "= mlgates =" in line)
    end = next(i for i in range(start, len(lines)) if " criteria: " in lines[i])
    return result.parseoutcomes(), lines[start:end + 1]


@pytest.mark.slow
def test_xdist_gives_the_same_outcomes_and_table(gate_project: pytest.Pytester) -> None:
    plain = gate_project.runpytest_subprocess(*ARGS)
    distributed = gate_project.runpytest_subprocess(*ARGS, "-n", "2")
    assert "2 workers" in distributed.stdout.str()
    plain_outcomes, plain_table = outcome_and_table(plain)
    dist_outcomes, dist_table = outcome_and_table(distributed)
    assert plain_outcomes == {"passed": 5, "failed": 1, "skipped": 2}
    assert dist_outcomes == plain_outcomes
    assert dist_table == plain_table
    assert dist_table[-1] == "8 criteria: 5 GREEN, 1 RED, 2 UNVERIFIED, 0 ERROR"
    # the table is printed once, by the controller
    assert distributed.stdout.str().count("= mlgates =") == 1


def test_without_xdist_installed(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest_subprocess(*ARGS, "-p", "no:xdist")
    result.assert_outcomes(passed=5, failed=1, skipped=2)
    assert "PluginValidationError" not in result.stderr.str()
