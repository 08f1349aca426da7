"""Step-level logs (SPEC "Step-level logs") and the columnar log behind every gate.

A fine-tuning loop logs one row per optimizer step and evaluates every N steps: the
evaluation columns are empty on the training rows.  Series run over the rows that hold a
column, ``step[n]`` selects by step as ``epoch[n]`` does by epoch, epochs are optional and
always the log's own numbers.

(a) Real pytest sessions on per-step CSV logs: GREEN on a healthy run, RED on a 200,000-step
    run with a NaN at step 150,000 (``finite_log`` names that step; ``check:`` over
    ``eval_loss`` reads only evaluation rows).
(b) Hypothesis: the vectorised ``check:`` over a sparse column equals a row-by-row reference
    written here; the streamed CSV reader (numpy chunks, any chunk size) gives the cells
    Python's csv module reads, and a log of steps' series are exactly the held rows.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_mlgates import runcsv
from pytest_mlgates.errors import ExprError
from pytest_mlgates.expr import EvalEnv, compile_check
from pytest_mlgates.formats.plain import parse_plain_log
from pytest_mlgates.runcsv import read_csv_columns
from pytest_mlgates.runlog import Log

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def write_steps_log(path: Path, steps: int, eval_every: int, *, nan_at: int | None = None,
                    steps_per_epoch: int | None = None) -> None:
    """The CSV a fine-tuning loop writes: a training row per step, an evaluation row
    (``eval_loss``, ``eval_accuracy``) after every ``eval_every``-th step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "step,epoch,train_loss,lr,eval_loss,eval_accuracy" if steps_per_epoch else \
        "step,train_loss,lr,eval_loss,eval_accuracy"
    lines = [header]
    for step in range(1, steps + 1):
        epoch = f"{(step - 1) // steps_per_epoch + 1}," if steps_per_epoch else ""
        train = "nan" if step == nan_at else f"{2.0 * math.exp(-step / (steps / 3)) + 0.01:.6f}"
        lines.append(f"{step},{epoch}{train},{3e-4 * (1 - step / (steps + 1)):.6g},,")
        if step % eval_every == 0:
            evaluation = 1.8 * math.exp(-step / (steps / 2)) + 0.05
            lines.append(f"{step},{epoch},,{evaluation:.6f},{min(0.99, 0.5 + step / (2 * steps)):.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- (a) sessions

GATES = """\
title: fine-tuning, one row per step
run:
  format: plain
  log: logs/metrics.csv
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: eval_loss_decreases
    check: "min(eval_loss) < first(eval_loss)"
  - name: evaluated_every_100_steps
    check: "len(eval_loss) == max(step) // 100"
  - name: later_eval_better
    check: "step[400].eval_loss < step[100].eval_loss"
  - name: accuracy_rises
    check: "final.eval_accuracy > first(eval_accuracy)"
  - name: converges
    gate: converged
    metric: eval_loss
  - name: small_gap
    gate: generalization_gap
    train: train_loss
    val: eval_loss
    max_gap: 1.0
"""
NAMES = ("no_nan", "eval_loss_decreases", "evaluated_every_100_steps", "later_eval_better", "accuracy_rises",
         "converges", "small_gap")


def _session(pytester: pytest.Pytester, gates: str, runs: dict[str, Path]) -> str:
    pytester.makefile(".gates.yaml", steps=gates)
    args = ["steps.gates.yaml", "-rA", "-p", "no:cacheprovider", "--mlgates-archive=off"]
    for label, path in runs.items():
        (pytester.path / label).symlink_to(path, target_is_directory=True)
        args += ["--run-dir", label]
    return str(pytester.runpytest_subprocess(*args, timeout=300).stdout.str())


def _outcomes(output: str) -> dict[tuple[str, str], str]:
    return {(c, run): s for s, c, run in
            re.findall(r"^(PASSED|FAILED|ERROR) \S*::(\w+)\[([\w-]+)\]", output, re.MULTILINE)}


def _line(output: str, criterion: str, run: str) -> str:
    match = re.search(rf"_ gate: {criterion}\[{run}\] _+\n(.*)\n", output)
    return match.group(1) if match else ""


@pytest.mark.slow
def test_a_step_level_run_green_when_healthy_red_on_a_nan_at_step_150000(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    healthy, nan = tmp_path / "healthy", tmp_path / "nan"
    write_steps_log(healthy / "logs" / "metrics.csv", 1000, 100)  # training rows only between evals
    write_steps_log(nan / "logs" / "metrics.csv", 200_000, 100, nan_at=150_000, steps_per_epoch=50_000)
    output = _session(pytester, GATES, {"healthy": healthy, "nan": nan})
    verdicts = _outcomes(output)
    assert len(verdicts) == 2 * len(NAMES), output[-3000:]
    assert {c: verdicts[(c, "healthy")] for c in NAMES} == dict.fromkeys(NAMES, "PASSED"), output[-4000:]
    # the NaN is named by its step (and the epoch the log gives it), nothing else is RED
    assert verdicts[("no_nan", "nan")] == "FAILED", output[-3000:]
    assert _line(output, "no_nan", "nan") == "train_loss = nan at step 150000 (epoch 3); needs finite", output
    others = {c: verdicts[(c, "nan")] for c in NAMES if c != "no_nan"}
    assert others == dict.fromkeys(others, "PASSED"), output[-4000:]
    assert "INTERNALERROR" not in output and "Traceback" not in output


def test_the_gap_over_all_evaluations_pairs_each_with_the_training_loss_logged_before_it(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_steps_log(run / "logs" / "metrics.csv", 1000, 100, nan_at=500, steps_per_epoch=250)
    gates = GATES.split("exit_criteria:")[0] + """exit_criteria:
  - name: gap_everywhere
    gate: generalization_gap
    train: train_loss
    val: eval_loss
    max_gap: 1.0
    at: all
"""
    output = _session(pytester, gates, {"run": run})
    # the evaluation at step 500 follows the NaN training row of step 500
    assert re.match(r"eval_loss - train_loss = inf at step 500 \(epoch 2\) \(nan vs \d\.\d+\); needs <= 1$",
                    _line(output, "gap_everywhere", "run")), output[-3000:]


def test_step_level_checks_name_steps_and_fail_in_one_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_steps_log(run / "logs" / "metrics.csv", 1000, 100, steps_per_epoch=250)
    gates = GATES.split("exit_criteria:")[0] + """exit_criteria:
  - name: red_first_eval
    check: "first(eval_loss) < 0.1"
  - name: red_step
    check: "step[500].eval_loss < 0.1"
  - name: red_epoch
    check: "epoch[2].eval_loss < 0.1"
  - name: red_missing_step
    check: "step[450].eval_loss < 0.1"
  - name: green_epochs_counted
    check: "len(eval_loss) == 10 and max(epoch) == 4"
"""
    output = _session(pytester, gates, {"run": run})
    verdicts = _outcomes(output)
    assert verdicts[("green_epochs_counted", "run")] == "PASSED", output[-3000:]
    assert re.match(r"first\(eval_loss\) = 1\.\d+ at step 100 \(epoch 1, first\); needs < 0\.1$",
                    _line(output, "red_first_eval", "run")), output[-3000:]
    assert re.match(r"eval_loss = \d\.\d+ at step 500 \(epoch 2\); needs < 0\.1$",
                    _line(output, "red_step", "run")), output[-3000:]
    # epoch[2] is the last evaluation of epoch 2 (steps 251-500)
    assert _line(output, "red_epoch", "run") == _line(output, "red_step", "run"), output[-3000:]
    assert verdicts[("red_missing_step", "run")] == "FAILED", output[-3000:]
    assert re.search(r"^red_missing_step\s+run\s+-\s+-\s+ERROR$", output, re.MULTILINE), output[-3000:]
    assert "column 'eval_loss' has no value at step 450" in _line(output, "red_missing_step", "run"), output
    assert "Traceback" not in output


# --------------------------------------------------------------------------- (b) properties

cells = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, width=32), st.just(math.nan),
                  st.sampled_from([math.inf, -math.inf, 0.0]))


@st.composite
def sparse_logs(draw: st.DrawFn) -> tuple[list[float], list[float | None], list[float | None]]:
    """(steps, a sparse column, a dense column): steps never decrease (a step may repeat:
    its training and evaluation rows)."""
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    steps = [float(sum(gaps[: i + 1]) + 1) for i in range(n)]
    sparse = draw(st.lists(cells, min_size=n, max_size=n))
    dense = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n))
    return steps, sparse, [float(v) for v in dense]


def _reference(function: str, values: list[float], labels: list[float]) -> tuple[float, str]:
    """The documented semantics, row by row: (value, the row number it is at or '')."""
    if function == "len":
        return float(len(values)), ""
    if not values:
        raise ExprError("the series is empty")
    if function == "first":
        return values[0], f"{labels[0]:g}"
    if function == "last":
        return values[-1], f"{labels[-1]:g}"
    if function == "mean":
        total = 0.0
        for v in values:
            total += v
        return total / len(values), ""
    want_min = function in ("min", "argmin")
    best = 0
    for i, v in enumerate(values):
        if math.isnan(v):
            best = i
            break
        if (v < values[best]) if want_min else (v > values[best]):
            best = i
    if function in ("min", "max"):
        return values[best], f"{labels[best]:g}"
    return (math.nan if math.isnan(values[best]) else labels[best]), ""


def _same(a: float | None, b: float) -> bool:
    if a is None:
        return False
    if math.isnan(b):
        return math.isnan(a)
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@SETTINGS
@given(sparse_logs(), st.sampled_from(["first", "last", "min", "max", "mean", "len", "argmin", "argmax"]))
def test_vectorised_series_functions_equal_a_row_by_row_reference(
        log: tuple[list[float], list[float | None], list[float]], function: str) -> None:
    steps, sparse, dense = log
    rows = [{"step": s, "x": x, "d": d} for s, x, d in zip(steps, sparse, dense)]
    env = EvalEnv.from_log(Log.from_rows(rows, "m.csv", index="step", names=("step", "x", "d")))
    held = [(x, s) for x, s in zip(sparse, steps) if x is not None]
    for column, values, labels in (("x", [v for v, _ in held], [s for _, s in held]), ("d", dense, steps)):
        source = f"{function}({column}) >= -1e308"
        try:
            expected, at = _reference(function, values, labels)
        except ExprError:
            with pytest.raises(ExprError, match="the series is empty"):
                compile_check(source).evaluate(env)
            continue
        outcome = compile_check(source).evaluate(env)
        if function == "mean" and math.isfinite(expected):  # numpy sums pairwise: rounding differs
            scale = max(abs(v) for v in values)
            assert outcome.value is not None and math.isclose(outcome.value, expected, rel_tol=1e-9,
                                                               abs_tol=1e-12 * scale), (values, outcome)
        else:
            assert _same(outcome.value, expected), (function, column, values, outcome)
        if at:
            assert f"at step {at} " in outcome.where, (outcome.where, at)


@SETTINGS
@given(sparse_logs(), st.integers(0, 45))
def test_step_n_and_final_read_the_last_row_of_that_step_that_holds_the_column(
        log: tuple[list[float], list[float | None], list[float]], pick: int) -> None:
    steps, sparse, dense = log
    rows = [{"step": s, "x": x, "d": d} for s, x, d in zip(steps, sparse, dense)]
    env = EvalEnv.from_log(Log.from_rows(rows, "m.csv", index="step", names=("step", "x", "d")))
    step = int(steps[pick % len(steps)]) + (1 if pick >= len(steps) + 3 else 0)
    held_at = [x for x, s in zip(sparse, steps) if x is not None and s == step]
    check = compile_check(f"step[{step}].x == step[{step}].x")
    if step not in steps:
        with pytest.raises(ExprError, match=f"no row with step {step}"):
            check.evaluate(env)
    elif not held_at:
        with pytest.raises(ExprError, match=f"column 'x' has no value at step {step}"):
            check.evaluate(env)
    else:
        outcome = check.evaluate(env)
        assert _same(outcome.value, held_at[-1]) and outcome.where == f"at step {step}"
    held = [x for x in sparse if x is not None]
    final = compile_check("final.x == final.x")
    if held:
        assert _same(final.evaluate(env).value, held[-1])
    else:
        with pytest.raises(ExprError, match="has no value in the log"):
            final.evaluate(env)


def _csv_reference(text: str) -> tuple[list[str], list[list[float | None]]]:
    """The cells as Python's csv module reads them (None: an empty cell)."""
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if r != []]
    header = [h.strip() for h in records[0]]
    return header, [[None if c.strip() == "" else float(c) for c in r] for r in records[1:]]


number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e-5", " 2.5", "3 ", "", "", "0"]),
)


@SETTINGS
@given(st.integers(1, 5).flatmap(lambda ncol: st.tuples(
    st.just(ncol), st.lists(st.lists(number_text, min_size=ncol, max_size=ncol), max_size=30))),
    st.sampled_from(["\n", "\r\n"]), st.booleans(), st.integers(8, 200))
def test_the_streamed_csv_reader_reads_what_the_csv_module_reads(
        table: tuple[int, list[list[str]]], newline: str, blank_lines: bool, chunk: int) -> None:
    ncol, rows = table
    header = [f"c{j}" for j in range(ncol)]
    lines = [",".join(header)] + [",".join(r) for r in rows]
    if blank_lines:
        lines = [x for line in lines for x in (line, "")]
    text = newline.join(lines) + newline
    saved = runcsv.CHUNK_BYTES
    runcsv.CHUNK_BYTES = chunk  # many chunks: every boundary is crossed somewhere
    try:
        read = read_csv_columns(io.BytesIO(text.encode()), "m.csv")
    finally:
        runcsv.CHUNK_BYTES = saved
    want_header, want_rows = _csv_reference(text)
    assert read.header == want_header and len(read) == len(want_rows)
    for j, name in enumerate(want_header):
        got = read.arrays[name].tolist()
        mask = read.held[name].tolist()
        for i, row in enumerate(want_rows):
            assert mask[i] == (row[j] is not None), (name, i, text)
            if row[j] is not None:
                assert _same(got[i], row[j]), (name, i, got[i], row[j])
    # line numbers count records, blank ones included (as the format's messages do)
    record_lines = [n for n, r in enumerate(csv.reader(io.StringIO(text, newline="")), start=1) if r != []][1:]
    assert read.lines.tolist() == record_lines


@SETTINGS
@given(sparse_logs())
def test_a_plain_log_of_steps_keeps_each_columns_held_rows_in_file_order(
        log: tuple[list[float], list[float | None], list[float]]) -> None:
    steps, sparse, dense = log
    lines = ["step,x,d"] + [f"{s:g},{'' if x is None else repr(x)},{d!r}" for s, x, d in zip(steps, sparse, dense)]
    parsed = parse_plain_log("\n".join(lines) + "\n", "m.csv", jsonl=False)
    assert parsed.index == "step" and parsed.sparse
    values, labels = parsed.series("x")
    held = [(x, s) for x, s in zip(sparse, steps) if x is not None]
    assert len(values) == len(held)
    assert all(_same(a, b) for a, b in zip(values.tolist(), [x for x, _ in held]))
    assert labels.tolist() == [s for _, s in held]
    assert parsed.series("d")[0].tolist() == dense
