"""``class_recall`` with ``confidence:`` (SPEC "Honest numbers", issue 20): the floor applies
to the lower bound of the recall's two-sided Clopper-Pearson interval from its counts
(``val_recall_<c>`` = tp / ``val_support_<c>``); a run without the counts is UNVERIFIED in
one line.  Real log files in tmp dirs; the bound is checked against SciPy's beta quantile.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from gate_helpers import run_gate
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pytest_mlgates.collect import parse_gate_text
from pytest_mlgates.errors import GateFileError, Unverified


def write_log(run: Path, columns: dict[str, list[object]]) -> Path:
    """An engine-format run dir holding only ``training_log.csv`` with these columns."""
    run.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(columns.values())))
    base: dict[str, list[object]] = {"epoch": list(range(1, n + 1)), "train_loss": [1.0] * n,
                                     "val_loss": [1.0] * n}
    base.update(columns)
    lines = [",".join(base)] + [",".join(repr(v) if isinstance(v, float) else str(v) for v in row)
                                for row in zip(*base.values())]
    (run / "training_log.csv").write_text("\n".join(lines) + "\n")
    return run


def counts(run: Path, **per_class: tuple[int, int]) -> Path:
    """One epoch; ``a=(tp, n)`` gives val_recall_a = tp / n and val_support_a = n."""
    columns: dict[str, list[object]] = {}
    for name, (tp, n) in per_class.items():
        columns[f"val_recall_{name}"] = [tp / n if n else 0.0]
    for name, (_, n) in per_class.items():
        columns[f"val_support_{name}"] = [n]
    return write_log(run, columns)


def reference_lower(k: int, n: int, confidence: float) -> float:
    """The two-sided Clopper-Pearson lower bound, from SciPy."""
    stats = pytest.importorskip("scipy.stats")
    return 0.0 if k == 0 else float(stats.beta.ppf((1 - confidence) / 2, k, n - k + 1))


def test_a_perfect_recall_on_three_samples_does_not_clear_a_floor_of_0_8(tmp_path: Path) -> None:
    run = counts(tmp_path / "run", a=(3, 3), b=(300, 300))
    assert run_gate(run, "class_recall", {"floor": 0.8}).passed  # the point estimate clears it
    r = run_gate(run, "class_recall", {"floor": 0.8, "confidence": 0.95})
    assert not r.passed
    assert r.message == "val_recall_a = 1.000 (3/3) at epoch 1 (final), 95% lower bound 0.292; needs > 0.8"
    assert (r.value, r.threshold) == ("0.292 (3/3)", "> 0.8 (95% lower bound)")


def test_enough_samples_clear_the_floor_and_the_line_shows_the_weakest_bound(tmp_path: Path) -> None:
    run = counts(tmp_path / "run", a=(290, 300), b=(57, 60))
    r = run_gate(run, "class_recall", {"floor": 0.8, "confidence": 0.95})
    assert r.passed, r.message
    low = reference_lower(57, 60, 0.95)
    assert r.message == (f"lowest 95% lower bound over 2 classes = {low:.3f}: val_recall_b = 0.950 (57/60) "
                         "at epoch 1 (final); needs > 0.8")
    assert r.value == f"{low:.3f} (57/60)"
    r = run_gate(run, "class_recall", {"floor": 0.8, "confidence": 0.999, "classes": ["b"]})
    assert not r.passed and "99.9% lower bound" in r.message


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.integers(min_value=1, max_value=500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.floats(min_value=0.0, max_value=0.99), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_green_iff_every_reference_lower_bound_is_above_the_floor(
    a: tuple[int, int], b: tuple[int, int], floor: float, confidence: float
) -> None:
    bounds = [reference_lower(k, n, confidence) for k, n in (a, b)]
    assume(all(abs(x - floor) > 1e-7 for x in bounds))  # no tie within the bisection's reach
    with tempfile.TemporaryDirectory() as tmp:
        r = run_gate(counts(Path(tmp) / "run", a=a, b=b), "class_recall",
                     {"floor": floor, "confidence": confidence})
    assert r.passed == (min(bounds) > floor), r.message
    if min(k / n for k, n in (a, b)) > floor:  # weighed: the line names the weakest bound's counts
        k, n = (a, b)[bounds.index(min(bounds))]
        assert f"({k}/{n})" in r.message and f"{confidence * 100:g}% lower bound" in r.message


def test_at_all_weighs_every_epoch_with_its_own_counts(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run", {"val_recall_a": [2 / 3, 0.9, 0.95], "val_support_a": [3, 100, 100]})
    assert run_gate(run, "class_recall", {"floor": 0.5, "confidence": 0.95}).passed
    r = run_gate(run, "class_recall", {"floor": 0.5, "confidence": 0.95, "at": "all"})
    assert not r.passed
    assert r.message.startswith("val_recall_a = 0.667 (2/3) at epoch 1, 95% lower bound 0.094; needs > 0.5")


def test_a_run_without_counts_is_unverified_in_one_line_naming_the_column(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run", {"val_recall_a": [0.9], "val_recall_b": [0.95]})
    with pytest.raises(Unverified) as err:
        run_gate(run, "class_recall", {"floor": 0.8, "confidence": 0.95})
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"val_recall_a = 0.900 at epoch 1 (final): no column val_support_a in "
                           f"{run}/training_log.csv")
    assert (f"; val_recall_b = 0.950 at epoch 1 (final): no column val_support_b in {run}/training_log.csv"
            in line)  # every column at fault, not "(+1 more)"
    assert line.endswith("; to weigh them, log val_support_<class> beside each recall, or provide the "
                         "mlgates_subject fixture with a 'val' loader to recompute the counts from the run's "
                         "checkpoint")


def test_a_recall_at_or_below_the_floor_is_red_without_counts(tmp_path: Path) -> None:
    """The lower bound is never above the recall itself: no counts are needed to say RED."""
    run = write_log(tmp_path / "run", {"val_recall_a": [0.9], "val_recall_b": [0.0]})
    r = run_gate(run, "class_recall", {"floor": 0.0, "confidence": 0.95})
    assert not r.passed and r.message == "val_recall_b = 0.000 at epoch 1 (final); needs > 0"


def test_counts_that_do_not_explain_the_recall_are_unverified(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run", {"val_recall_a": [0.42], "val_support_a": [7]})
    with pytest.raises(Unverified, match=r"val_recall_a = 0.420 at epoch 1 \(final\) is not a whole number "
                                         r"of the 7 samples of val_support_a \(2.94 of 7\)"):
        run_gate(run, "class_recall", {"floor": 0.2, "confidence": 0.95})
    run = write_log(tmp_path / "bad", {"val_recall_a": [0.5], "val_support_a": [float("nan")]})
    with pytest.raises(Unverified, match=r"val_support_a = nan at epoch 1 \(final\) is not a count"):
        run_gate(run, "class_recall", {"floor": 0.2, "confidence": 0.95})


def test_a_class_without_validation_samples_clears_no_floor(tmp_path: Path) -> None:
    run = counts(tmp_path / "run", a=(0, 0), b=(40, 40))
    r = run_gate(run, "class_recall", {"floor": 0.0, "confidence": 0.95})
    assert not r.passed and r.message.startswith("val_recall_a = 0.000 at epoch 1 (final); needs > 0")
    run = write_log(tmp_path / "empty", {"val_recall_a": [1.0], "val_support_a": [0]})
    r = run_gate(run, "class_recall", {"floor": 0.0, "confidence": 0.95})
    assert not r.passed
    assert r.message == ("val_recall_a = 1.000 (0/0) at epoch 1 (final), 95% lower bound 0.000 "
                         "(no sample of the class); needs > 0")


def test_renamed_metrics_find_their_counts(tmp_path: Path) -> None:
    """A trainer's own names: ``eval_recall_a`` is counted by ``eval_support_a``, or by what
    the gate file maps ``val_support_a`` to."""
    run = write_log(tmp_path / "run", {"eval_recall_a": [1.0], "eval_support_a": [3]})
    r = run_gate(run, "class_recall", {"floor": 0.8, "confidence": 0.95, "classes": ["a"]},
                 aliases={"val_recall_a": "eval_recall_a"})
    assert not r.passed and "(3/3)" in r.message
    run = write_log(tmp_path / "mapped", {"eval_recall_a": [1.0], "n_a": [300]})
    r = run_gate(run, "class_recall", {"floor": 0.8, "confidence": 0.95, "classes": ["a"]},
                 aliases={"val_recall_a": "eval_recall_a", "val_support_a": "n_a"})
    assert r.passed and "(300/300)" in r.message


# --------------------------------------------------------------------------- bad parameters

GATES = """\
exit_criteria:
  - name: fine
    check: "len(val_loss) > 0"
  - name: every_class_learned
    gate: class_recall
    floor: 0.5
    confidence: {value}
"""


@pytest.mark.parametrize(("value", "shown"), [("1.5", "got 1.5"), ("0", "got 0"), ("1", "got 1"),
                                              ("high", "got 'high'"), ("true", "got True"),
                                              ("-0.5", "got -0.5")])
def test_bad_confidence_is_a_collection_error_naming_file_line_and_range(value: str, shown: str) -> None:
    with pytest.raises(GateFileError) as err:
        parse_gate_text(GATES.format(value=value), Path("exp.gates.yaml"))
    line = str(err.value)
    assert line.startswith("exp.gates.yaml:7:") and "\n" not in line
    assert "criterion 'every_class_learned'" in line and shown in line
    assert "parameter 'confidence' must be a number in (0, 1), e.g. 0.95" in line


# --------------------------------------------------------------------------- in a session

SESSION_GATES = """\
exit_criteria:
  - name: honest_recall
    gate: class_recall
    floor: 0.5
    confidence: 0.95
"""


def test_unverified_in_a_session_and_red_under_strict(pytester: pytest.Pytester) -> None:
    write_log(pytester.path / "runs" / "x", {"val_recall_a": [0.9]})
    pytester.makefile(".gates.yaml", exp=SESSION_GATES)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--run-dir", "runs/x")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([("*UNVERIFIED: val_recall_a = 0.900 at epoch 1 (final): no column "
                                  "val_support_a in */runs/x/training_log.csv (the number of samples "
                                  "behind the rate), so its 95% lower bound cannot be computed; to weigh them, log "
                                  "val_support_<class> beside each recall, or provide the mlgates_subject fixture "
                                  "with a 'val' loader to recompute the counts from the run's checkpoint")])
    result.stdout.fnmatch_lines(["*honest_recall*UNVERIFIED*"])
    strict = pytester.runpytest("-p", "no:cacheprovider", "--run-dir", "runs/x", "--mlgates-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*no column val_support_a*; fails under --mlgates-strict*"])


def test_across_runs_counts_an_unverified_seed_as_not_passing(pytester: pytest.Pytester) -> None:
    counts(pytester.path / "runs" / "s0", a=(90, 100))
    counts(pytester.path / "runs" / "s1", a=(3, 3))
    write_log(pytester.path / "runs" / "s2", {"val_recall_a": [0.9]})
    for k, outcome in ((1, {"passed": 1}), (2, {"failed": 1})):
        pytester.makefile(".gates.yaml", exp=SESSION_GATES + f"    across_runs: {{at_least: {k}}}\n")
        result = pytester.runpytest("-p", "no:cacheprovider", *(a for s in ("s0", "s1", "s2")
                                                                 for a in ("--run-dir", f"runs/{s}")))
        result.assert_outcomes(**outcome)
    [line] = [ln for ln in result.outlines if ln.startswith("1 of 3 runs pass")]
    assert line.startswith("1 of 3 runs pass, needs at least 2: runs/s0 = 0.824 (90/100) GREEN; "
                           "runs/s1 = 0.292 (3/3) RED (val_recall_a = 1.000 (3/3) at epoch 1 (final), "
                           "95% lower bound 0.292; needs > 0.5); runs/s2 = - UNVERIFIED (val_recall_a = 0.900")
