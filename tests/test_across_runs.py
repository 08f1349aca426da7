"""``across_runs: {at_least: K}``: one item judges the seeds of one experiment together.

Real pytest sessions (pytester) on three plain runs written as CSV logs: seed2's minority
class collapsed.  No model is trained here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from seed_runs import RUN_SECTION, run_args, write_seeds

from pytest_mlgates.collect import parse_gate_text
from pytest_mlgates.errors import GateFileError
from pytest_mlgates.ledger import LEDGER_NAME, read_ledger

GATES = """\
exit_criteria:
  - name: minority_not_collapsed
    check: "final.val_recall_malignant > 0.5"
    across_runs: {{at_least: {k}}}
  - name: every_class_learned
    gate: class_recall
    floor: 0.2
    across_runs:
      at_least: {k}
  - name: loss_decreases
    check: "min(val_loss) < first(val_loss)"
"""


def gates(k: int) -> str:
    return RUN_SECTION + GATES.format(k=k)


@pytest.fixture
def seeds(pytester: pytest.Pytester) -> list[Path]:
    return write_seeds(pytester.path)


def ledger_criteria(run: Path) -> dict[str, dict[str, object]]:
    [entry] = read_ledger(run / "acceptance" / LEDGER_NAME).entries
    return {c["name"]: c for c in entry["criteria"]}


def test_two_of_three_seeds_is_green_with_every_value_in_one_item(
    pytester: pytest.Pytester, seeds: list[Path]
) -> None:
    pytester.makefile(".gates.yaml", exp=gates(k=2))
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", *run_args(seeds, pytester.path))
    result.assert_outcomes(passed=5)
    # one item for the set, one per run for the criterion without across_runs
    passed = [ln.split()[0] for ln in result.outlines if " PASSED " in ln]
    assert "exp.gates.yaml::minority_not_collapsed[across_runs]" in passed
    assert "exp.gates.yaml::loss_decreases[runs/seed2]" in passed
    for run in seeds:  # archived in each run's ledger, with that run's own value
        criteria = ledger_criteria(run)
        assert criteria["minority_not_collapsed"]["status"] == "GREEN"
        assert criteria["minority_not_collapsed"]["id"] == \
            "exp.gates.yaml::minority_not_collapsed[across_runs]"
    assert ledger_criteria(seeds[2])["minority_not_collapsed"]["value"] == "0.000"
    assert ledger_criteria(seeds[0])["minority_not_collapsed"]["value"] == "0.900"
    [archive] = [p for p in (seeds[2] / "acceptance").iterdir() if p.is_dir()]
    results = json.loads((archive / "results.json").read_text())
    [mine] = [c for c in results["criteria"] if c["name"] == "minority_not_collapsed"]
    assert mine["run_status"] == "RED" and "2 of 3 runs pass" in mine["message"]


@pytest.mark.slow
def test_three_of_three_is_red_naming_the_collapsed_seed_under_xdist(
    pytester: pytest.Pytester, seeds: list[Path]
) -> None:
    """Under ``-n 2`` the set's item runs on a worker; its per-run values reach every
    seed's ledger through the report's user properties."""
    pytest.importorskip("xdist")
    pytester.makefile(".gates.yaml", exp=gates(k=3))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                           *run_args(seeds, pytester.path))
    result.assert_outcomes(passed=3, failed=2)
    [line] = [ln for ln in result.outlines if ln.startswith("2 of 3 runs pass")
              and "> 0.5" in ln]
    assert line.startswith("2 of 3 runs pass, needs at least 3: runs/seed0 = 0.900 GREEN; "
                           "runs/seed1 = 0.900 GREEN; runs/seed2 = 0.000 RED (")
    assert "val_recall_malignant = 0.000 at epoch 12 (final); needs > 0.5" in line
    for run in seeds:  # the set's RED is in every seed's ledger, beside each run's own GREEN
        criteria = ledger_criteria(run)
        assert criteria["every_class_learned"]["status"] == "RED"
        assert criteria["minority_not_collapsed"]["status"] == "RED"
        assert criteria["loss_decreases"]["status"] == "GREEN"
        [entry] = read_ledger(run / "acceptance" / LEDGER_NAME).entries
        assert entry["verdict"] == "RED"


def test_at_least_more_than_the_run_dirs_is_one_red_line_naming_the_count(
    pytester: pytest.Pytester, seeds: list[Path]
) -> None:
    pytester.makefile(".gates.yaml", exp=gates(k=4))
    result = pytester.runpytest("-p", "no:cacheprovider", *run_args(seeds, pytester.path))
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([("across_runs: at_least 4 can never pass: this session has 3 "
                                  "--run-dir (runs/seed0, runs/seed1, runs/seed2)")])


def test_across_runs_with_one_run_dir_says_so(
    pytester: pytest.Pytester, seeds: list[Path]
) -> None:
    pytester.makefile(".gates.yaml", exp=gates(k=1))
    result = pytester.runpytest("-p", "no:cacheprovider", *run_args(seeds[:1], pytester.path))
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([("across_runs: judges the seeds of one experiment together, and "
                                  "this session has one --run-dir (runs/seed0); pass one "
                                  "--run-dir per seed")])


BAD = RUN_SECTION + (
    "exit_criteria:\n"
    "  - name: fine\n"
    "    check: \"len(val_loss) > 0\"\n"
    "  - name: minority_not_collapsed\n"
    "    check: \"final.val_recall_malignant > 0.5\"\n"
    "    across_runs: {value}\n")


@pytest.mark.parametrize(("value", "shown"), [
    ("{at_least: 0}", "got 0"),
    ("{at_least: two}", "got 'two'"),
    ("{at_least: 1.5}", "got 1.5"),
    ("{at_least: true}", "got True"),
    ("{}", "got None"),
    ("3", "across_runs must be a mapping {at_least: K}"),
    ("{at_most: 2}", "unknown key across_runs.at_most (did you mean 'at_least'?)"),
])
def test_bad_across_runs_names_file_line_and_the_valid_range(value: str, shown: str) -> None:
    with pytest.raises(GateFileError) as err:
        parse_gate_text(BAD.replace("{value}", value), Path("exp.gates.yaml"))
    line = str(err.value)
    assert line.startswith("exp.gates.yaml:7:") and "\n" not in line
    assert "criterion 'minority_not_collapsed'" in line and shown in line
    if "at_least" in value and "got" in shown:
        assert "(valid: 1 to the number of --run-dir seeds)" in line


def test_bad_across_runs_is_a_collection_error_of_the_session(
    pytester: pytest.Pytester, seeds: list[Path]
) -> None:
    pytester.makefile(".gates.yaml", exp=BAD.replace("{value}", "{at_least: 0}"))
    result = pytester.runpytest("-p", "no:cacheprovider", *run_args(seeds, pytester.path))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([("exp.gates.yaml:7:*: criterion 'minority_not_collapsed': "
                                  "across_runs.at_least must be a whole number >= 1 (valid: 1 to "
                                  "the number of --run-dir seeds), got 0")])


def test_an_across_runs_criterion_is_not_judged_in_flight() -> None:
    from pytest_mlgates.inflight import inflight_criteria

    document = parse_gate_text(gates(k=2), Path("exp.gates.yaml"))
    assert document is not None
    assert [c.across_runs for c in document.criteria] == [2, 2, None]
    assert [c.name for c in inflight_criteria(document)] == ["loss_decreases"]
