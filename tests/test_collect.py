"""Collection: gate files and PLAN.md front matter become one item per criterion per run."""

from __future__ import annotations

import pytest
from test_plugin_synthetic import make_gate_project, write_run


@pytest.fixture
def gate_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_gate_project(pytester)


EXPECTED_NAMES = ["minority_not_collapsed", "no_nan", "nobody_looked_at_the_confusion_matrix",
                  "val_loss_decreases"]


def collected_ids(result: pytest.RunResult) -> list[str]:
    return sorted(line.strip() for line in result.outlines if "::" in line)


def test_gate_file_items_carry_the_run_in_their_id(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest("--collect-only", "-q", "--run-dir", "runs/good")
    assert collected_ids(result) == sorted(f"acc.gates.yaml::{n}[runs/good]" for n in EXPECTED_NAMES)


def test_two_run_dirs_give_two_items_per_criterion(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest(
        "--collect-only", "-q", "--run-dir", "runs/good", "--mlgates-run-dir", "runs/collapsed/")
    ids = collected_ids(result)
    assert len(ids) == 2 * len(EXPECTED_NAMES)
    assert "acc.gates.yaml::minority_not_collapsed[runs/collapsed]" in ids
    assert "acc.gates.yaml::minority_not_collapsed[runs/good]" in ids


def test_ini_run_dirs_are_used_without_the_option(gate_project: pytest.Pytester) -> None:
    gate_project.makeini("[pytest]\nmlgates_run_dirs =\n    runs/good\n")
    result = gate_project.runpytest("-q")
    result.assert_outcomes(passed=3, skipped=1)


def test_plan_front_matter_is_collected(pytester: pytest.Pytester) -> None:
    pytester.makefile(".md", **{"phase-2-PLAN": """\
---
phase: 2
wave: 1
must_haves:
  truths:
    - truth: "loss goes down"
      check: "last(val_loss) < first(val_loss)"
  artifacts:
    - path: training_log.csv
      contains: "epoch,train_loss"
  key_links:
    - from: training_log.csv
      to: phase-2-PLAN.md
      pattern: must_haves
---
# Phase 2
""", "notes-PLAN": "---\nphase: 3\n---\n# no must_haves: not collected\n"})
    write_run(pytester.path / "run")
    result = pytester.runpytest("-v", "--run-dir", "run")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*phase-2-PLAN.md::loss_goes_down[[]run[]] PASSED*",
        "*phase-2-PLAN.md::artifact:training_log.csv[[]run[]] PASSED*",
        "*phase-2-PLAN.md::key_link:training_log.csv->phase-2-PLAN.md[[]run[]] PASSED*",
    ])


def test_custom_patterns_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmlgates_gate_patterns = *.criteria.yaml\n")
    pytester.makefile(".criteria.yaml", mine="exit_criteria:\n  - name: a\n    check: 'len(epoch) == 3'\n")
    pytester.makefile(".gates.yaml", ignored="exit_criteria:\n  - name: b\n    check: 'len(epoch) == 3'\n")
    write_run(pytester.path / "run")
    result = pytester.runpytest("-q", "--run-dir", "run")
    result.assert_outcomes(passed=1)


def test_items_are_in_the_same_order_every_time(gate_project: pytest.Pytester) -> None:
    args = ("--collect-only", "-q", "--run-dir", "runs/good", "--run-dir", "runs/collapsed")
    first = [line for line in gate_project.runpytest(*args).outlines if "::" in line]
    second = [line for line in gate_project.runpytest(*args).outlines if "::" in line]
    assert first == second and len(first) == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("title: x\nexit_criterion: []\n",
         "bad.gates.yaml:2:1: unknown key 'exit_criterion' (did you mean 'exit_criteria'?)"),
        ("exit_criteria:\n  - name: a\n    gate: finite_lgo\n",
         "bad.gates.yaml:3:11: criterion 'a': unknown gate 'finite_lgo'; did you mean 'finite_log'?*"),
        ("exit_criteria:\n  - name: a\n    gate: class_recall\n    flor: 0.1\n",
         ("bad.gates.yaml:4:5: criterion 'a': gate class_recall: unknown parameter 'flor'; "
          "did you mean 'floor'?*")),
        ('exit_criteria:\n  - name: a\n    check: "min(val_loss) < firts(val_loss)"\n',
         "bad.gates.yaml:3:29: bad check 'min(val_loss) < firts(val_loss)': unknown function 'firts'*"),
        ("exit_criteria:\n  - name: a\n    check: len(epoch) >\n",
         "bad.gates.yaml:3:24: bad check 'len(epoch) >': syntax error*"),
        ("exit_criteria:\n  - name: a\n    gate: !!python/object/apply:os.system ['echo pwned']\n",
         "bad.gates.yaml:3:11: invalid YAML: could not determine a constructor for the tag*"),
        ("exit_criteria: [\n", "bad.gates.yaml:2:1: invalid YAML:*"),
        ("exit_criteria:\n  - name: a\n    gate: finite_log\n  - name: a\n    gate: plots\n",
         "bad.gates.yaml:4:5: duplicate criterion name 'a' (first at line 2)*"),
        ("must_haves:\n  truth: []\n",
         "bad.gates.yaml:2:3: unknown key must_haves.truth (did you mean 'truths'?)"),
        ("exit_criteria:\n  - name: a\n    check: 'len(epoch) > 1'\n    gate: finite_log\n",
         "bad.gates.yaml:2:5: criterion 'a' needs exactly one of check: or gate:"),
    ],
)
def test_collection_error_is_one_line_naming_file_line_column(
    pytester: pytest.Pytester, text: str, expected: str
) -> None:
    pytester.makefile(".gates.yaml", bad=text)
    result = pytester.runpytest("--run-dir", "run")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([expected])
    out = result.stdout.str()
    assert "Traceback" not in out and "pytest_mlgates" not in out and "pwned" not in out.replace(
        "['echo pwned']", "")


def test_collection_error_in_a_plan_counts_front_matter_lines(pytester: pytest.Pytester) -> None:
    pytester.makefile(".md", **{"p-PLAN": "---\nphase: 1\nmust_haves:\n  artifacts:\n"
                                          "    - path: a.txt\n      bogus: 1\n---\n# text\n"})
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([("p-PLAN.md:6:7: criterion 'artifact:a.txt': gate artifact: "
                                  "unknown parameter 'bogus'*")])
