"""``across_runs`` on real engine runs (issue 20, "What it must show"): three seeds of the
default config, seed2 with its minority class collapsed, judged in real pytest sessions.

The runs come from the session-shared ``trained_run`` fixture (3 epochs each): seed0 is the
``SMALL_OVERRIDES`` run that tests/test_gates_real.py, test_prove.py and
test_archive_gates.py train anyway; seed1 changes only the seed; seed2 also gives class 3
a loss weight of 0 (as test_gates_real's collapse does), so the model never predicts it.
The sessions judge copies (an archived session writes into its run dirs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import SMALL_OVERRIDES, copy_run

pytestmark = pytest.mark.slow

ZERO_WEIGHT_3 = "train.class_weights=[1,1,1,0,1,1,1,1,1,1]"
SEEDS = {
    "seed0": SMALL_OVERRIDES,
    "seed1": (*SMALL_OVERRIDES, "seed=1", "gates.inflight=null"),
    # the in-flight gate would stop a run whose minority recall stays 0: judged after training here
    "seed2": (*SMALL_OVERRIDES, "seed=2", ZERO_WEIGHT_3, "gates.inflight=null"),
}

GATES = """\
title: three seeds of configs/default.yaml
exit_criteria:
  - name: every_class_learned
    gate: class_recall
    across_runs: {{at_least: {k}}}
  - name: every_class_above_a_tenth_at_95
    gate: class_recall
    floor: 0.1
    confidence: 0.95
    across_runs: {{at_least: {k}}}
"""


@pytest.fixture(scope="module")
def seed_runs(trained_run) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The three trainings, once per session (the cache is shared with other test files)."""
    return {name: trained_run(overrides) for name, overrides in SEEDS.items()}


def session(pytester: pytest.Pytester, seed_runs: dict[str, Path], k: int) -> pytest.RunResult:
    args: list[str] = []
    for name, run in seed_runs.items():
        copy_run(run, pytester.path / "runs" / name)
        args += ["--run-dir", f"runs/{name}"]
    pytester.makefile(".gates.yaml", seeds=GATES.format(k=k))
    return pytester.runpytest("-p", "no:cacheprovider", "-rf", *args)


def archived(run: Path) -> dict[str, dict[str, object]]:
    [archive] = [p for p in (run / "acceptance").iterdir() if p.is_dir()]
    return {c["name"]: c for c in json.loads((archive / "results.json").read_text())["criteria"]}


def test_the_real_seeds_really_differ_and_seed2_collapsed(seed_runs: dict[str, Path]) -> None:
    finals = {name: json.loads((run / "training_results.json").read_text())["final"]
              for name, run in seed_runs.items()}
    assert finals["seed0"]["val_recall_3"] > 0 and finals["seed1"]["val_recall_3"] > 0
    assert finals["seed2"]["val_recall_3"] == 0.0
    assert finals["seed0"]["val_loss"] != finals["seed1"]["val_loss"]
    for final in finals.values():  # the counts behind every recall are in the log
        assert sum(final[f"val_support_{c}"] for c in range(10)) == \
            len(json.loads((seed_runs["seed0"] / "splits.json").read_text())["val"])


def test_two_of_three_real_seeds_is_green(pytester: pytest.Pytester, seed_runs: dict[str, Path]) -> None:
    result = session(pytester, seed_runs, k=2)
    result.assert_outcomes(passed=2)
    criteria = archived(pytester.path / "runs" / "seed2")
    plain = str(criteria["every_class_learned"]["message"])
    assert plain.startswith("runs/seed2: RED (val_recall_3 = 0.000 at epoch 3 (final); needs > 0); the set: ")
    assert re.search(r"2 of 3 runs pass, needs at least 2: runs/seed0 = 0\.\d{3} GREEN; "
                    r"runs/seed1 = 0\.\d{3} GREEN; runs/seed2 = 0\.000 RED \(val_recall_3 = 0\.000 "
                    r"at epoch 3 \(final\); needs > 0\)$", plain), plain
    weighed = str(criteria["every_class_above_a_tenth_at_95"]["message"])
    assert re.search(r"2 of 3 runs pass, needs at least 2: runs/seed0 = 0\.\d{3} \(\d+/\d+\) GREEN; "
                    r"runs/seed1 = 0\.\d{3} \(\d+/\d+\) GREEN; runs/seed2 = 0\.000 RED "
                    r"\(val_recall_3 = 0\.000 at epoch 3 \(final\); needs > 0\.1\)$", weighed), weighed


def test_three_of_three_real_seeds_is_red_naming_the_collapsed_seed(
    pytester: pytest.Pytester, seed_runs: dict[str, Path]
) -> None:
    result = session(pytester, seed_runs, k=3)
    result.assert_outcomes(failed=2)
    lines = [ln for ln in result.outlines if ln.startswith("2 of 3 runs pass, needs at least 3: ")]
    assert len(lines) == 2, result.outlines
    for line in lines:
        assert "runs/seed0 = " in line and "runs/seed1 = " in line
        failing = [part for part in line.split("; runs/") if " RED (" in part]
        assert len(failing) == 1 and failing[0].startswith("seed2 = 0.000 RED (val_recall_3 = 0.000 at epoch 3")
    for name in seed_runs:  # the set's RED is archived in every seed's ledger
        assert archived(pytester.path / "runs" / name)["every_class_learned"]["status"] == "RED"
