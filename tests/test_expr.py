"""The ``check:`` language: what users type, what they read back, and what is refused."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.errors import (
    ExprError,
    GateFailure,
    GateFileError,
    MlgatesError,
    RunDirError,
)
from pytest_mlgates.expr import Check, EvalEnv, Outcome, compile_check, format_value

NAN = math.nan


def make_env(best_epoch: int | None = 3, **columns: list[float]) -> EvalEnv:
    """A five-epoch log like the engine writes, with columns overridable per test."""
    log: dict[str, list[float]] = {
        "epoch": [1, 2, 3, 4, 5],
        "train_loss": [1.0, 0.7, 0.5, 0.4, 0.35],
        "val_loss": [0.9, 0.6, 0.45, 0.5, 0.55],
        "val_accuracy": [0.5, 0.7, 0.8, 0.82, 0.81],
        "val_recall_malignant": [0.2, 0.1, 0.05, 0.0, 0.0],
        "val_recall_benign": [0.9, 0.95, 0.97, 1.0, 1.0],
        "lr": [1e-3, 8e-4, 5e-4, 2e-4, 1e-5],
    }
    log.update(columns)
    return EvalEnv(columns=log, best_epoch=best_epoch)


def is_nan(value: float | None) -> bool:
    return value is not None and math.isnan(value)


def run_check(source: str, env: EvalEnv | None = None) -> Outcome:
    return compile_check(source).evaluate(env or make_env())


def compile_error(source: str) -> ExprError:
    with pytest.raises(ExprError) as info:
        compile_check(source)
    return info.value


def eval_error(source: str, env: EvalEnv | None = None) -> ExprError:
    check = compile_check(source)
    with pytest.raises(ExprError) as info:
        check.evaluate(env or make_env())
    return info.value


# --------------------------------------------------------------------------- the spec's checks


def test_spec_failure_line_for_a_collapsed_class() -> None:
    outcome = run_check("final.val_recall_malignant > 0")
    assert outcome == Outcome(
        passed=False, value=0.0, where="at epoch 5 (final)", needs="> 0",
        text="val_recall_malignant = 0.000 at epoch 5 (final); needs > 0",
    )


def test_spec_val_loss_decreases() -> None:
    outcome = run_check("min(val_loss) < first(val_loss)")
    assert outcome.passed
    assert outcome.value == 0.45
    assert outcome.where == "at epoch 3 (min)"
    assert outcome.needs == "< 0.900 (first(val_loss))"
    flat = make_env(val_loss=[0.7, 0.8, 0.9, 0.7, 0.75])
    assert not run_check("min(val_loss) < first(val_loss)", flat).passed


@pytest.mark.parametrize(
    ("source", "passed", "value"),
    [
        ("final.val_loss < 0.6", True, 0.55),
        ("best.val_loss < 0.51", True, 0.45),
        ("epoch[2].val_loss == 0.6", True, 0.6),
        ("last(val_loss) >= 0.55", True, 0.55),
        ("max(val_accuracy) > 0.81", True, 0.82),
        ("mean(val_loss[-2:]) < 0.5", False, 0.525),
        ("len(val_loss) == 5", True, 5),
        ("len(val_loss[-3:]) == 3", True, 3),
        ("val_loss[0] > val_loss[-1]", True, 0.9),
        ("val_loss[-1] < 1", True, 0.55),
        ("argmin(val_loss) == 3", True, 3),
        ("argmax(val_accuracy) == 4", True, 4),
        ("argmin(val_loss[3:]) == 4", True, 4),
        ("abs(final.train_loss - final.val_loss) < 0.1", False, 0.2),
        ("final.val_loss - final.train_loss < 0.3", True, 0.2),
        ("max(final.val_loss, best.val_loss) < 0.6", True, 0.55),
        ("min(final.val_loss, 0.1, best.val_loss) == 0.1", True, 0.1),
        ("final.val_loss / first(val_loss) < 0.7", True, 0.55 / 0.9),
        ("final.val_loss * 2 ** 2 > 2", True, 2.2),
        ("len(val_loss) // 2 == 2 and len(val_loss) % 2 == 1", True, 2),
        ("-final.val_loss < 0", True, -0.55),
        ("+final.val_loss > 0", True, 0.55),
        ("final.epoch == 5", True, 5),
        ("len(epoch) >= 5", True, 5),
        ("epoch[-1] == 5", True, 5),
        ("max(epoch[:2]) == 2", True, 2),
        ("val_loss[::2][1] == 0.45", True, 0.45),
        ("first(val_loss[::-1]) == 0.55", True, 0.55),
    ],
)
def test_language_features(source: str, passed: bool, value: float) -> None:
    outcome = run_check(source)
    assert outcome.passed is passed, outcome.text
    assert outcome.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("source", "passed"),
    [
        ("0 < final.val_loss < 1", True),
        ("0 < final.val_loss < 0.5", False),
        ("final.val_loss > 0.5 and final.val_accuracy > 0.8", True),
        ("final.val_loss > 0.5 and final.val_accuracy > 0.9", False),
        ("final.val_loss > 0.9 or final.val_accuracy > 0.8", True),
        ("final.val_loss > 0.9 or final.val_accuracy > 0.9", False),
        ("not final.val_loss > 0.9", True),
        ("not (final.val_loss > 0.9 or final.val_accuracy > 0.8)", False),
        ("True", True),
        ("False", False),
        ("True and final.val_loss < 1", True),
        ("final.val_loss != 0.55", False),
        ("1 < 2 < 3", True),
    ],
)
def test_comparisons_and_logic(source: str, passed: bool) -> None:
    assert run_check(source).passed is passed


def test_chained_comparison_reports_the_measured_operand_and_both_bounds() -> None:
    outcome = run_check("0 < final.val_loss < 0.5")
    assert outcome.text == "val_loss = 0.550 at epoch 5 (final); needs > 0 and < 0.5"
    assert outcome.value == 0.55


def test_constant_on_the_left_is_not_the_measured_value() -> None:
    outcome = run_check("0.9 < best.val_accuracy")
    assert outcome.value == 0.8
    assert outcome.text == "val_accuracy = 0.800 at epoch 3 (best); needs > 0.9"


def test_and_reports_the_first_failing_operand() -> None:
    outcome = run_check("final.val_loss < 1 and final.val_recall_malignant > 0 and final.lr > 0")
    assert not outcome.passed
    assert outcome.value == 0.0
    assert outcome.text == "val_recall_malignant = 0.000 at epoch 5 (final); needs > 0"


def test_or_reports_every_operand_when_all_fail() -> None:
    outcome = run_check("final.val_loss > 1 or min(val_recall_malignant) > 0")
    assert not outcome.passed
    assert outcome.value == 0.55
    assert outcome.text == (
        "(val_loss = 0.550 at epoch 5 (final); needs > 1) or "
        "(min(val_recall_malignant) = 0.000 at epoch 4 (min); needs > 0)"
    )
    assert outcome.needs == "(val_loss > 1) or (min(val_recall_malignant) > 0)"


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("final.val_loss > 0", "at epoch 5 (final)"),
        ("best.val_loss > 0", "at epoch 3 (best)"),
        ("epoch[4].val_loss > 0", "at epoch 4"),
        ("first(val_loss) > 0", "at epoch 1 (first)"),
        ("last(val_loss[:3]) > 0", "at epoch 3 (last)"),
        ("min(val_loss) > 0", "at epoch 3 (min)"),
        ("max(val_loss[1:]) > 0", "at epoch 2 (max)"),
        ("mean(val_loss) > 0", "over epochs 1-5 (mean)"),
        ("mean(val_loss[2:3]) > 0", "over epoch 3 (mean)"),
        ("val_loss[1] > 0", "at epoch 2"),
        ("len(val_loss) > 0", ""),
        ("final.val_loss - final.train_loss > 0", "at epoch 5 (final)"),
        ("final.val_loss - best.val_loss > 0", ""),
        ("abs(best.val_loss) > 0", "at epoch 3 (best)"),
    ],
)
def test_where_says_which_epoch_was_measured(source: str, where: str) -> None:
    assert run_check(source).where == where


def test_numbers_are_formatted_for_people() -> None:
    assert format_value(0.0) == "0.000"
    assert format_value(0.51234) == "0.512"
    assert format_value(NAN) == "nan"
    assert format_value(math.inf) == "inf"
    assert format_value(-math.inf) == "-inf"
    assert format_value(1.2e-5) == "1.2e-05"
    assert format_value(12.0, is_int=True) == "12"
    assert run_check("final.lr < 1e-6").text == "lr = 1e-05 at epoch 5 (final); needs < 1e-06"
    assert run_check("len(val_loss) >= 10").text == "len(val_loss) = 5; needs >= 10"
    assert run_check("argmin(val_loss) > 3").text == "argmin(val_loss) = 3; needs > 3"


def test_argmin_argmax_return_the_epoch_number_not_the_index() -> None:
    env = make_env(epoch=[0, 10, 20, 30, 40])  # e.g. a trainer that logs every 10 epochs
    assert run_check("argmin(val_loss) == 20", env).passed
    assert run_check("argmin(val_loss[-2:]) == 30", env).passed
    ties = make_env(val_loss=[1, 2, 0.5, 0.5, 3])
    assert run_check("argmin(val_loss) == 3", ties).passed  # a tie: the first epoch wins


def test_rows_without_an_epoch_column_count_from_one() -> None:
    env = EvalEnv({"loss": [3.0, 2.0, 2.5]}, best_epoch=2)
    assert run_check("final.loss == 2.5", env).where == "at epoch 3 (final)"
    assert run_check("best.loss == 2", env).passed
    assert run_check("argmin(loss) == 2 and len(epoch) == 3", env).passed


def test_best_epoch_given_as_a_function_is_asked_only_by_best() -> None:
    """A run's best epoch may cost a checkpoint read (Lightning): a check of the log alone
    never asks for it; one that says best. asks once."""
    asked: list[int] = []

    def best() -> int:
        asked.append(1)
        return 2

    env = EvalEnv({"epoch": [1, 2, 3], "val_loss": [0.5, 0.2, 0.3]}, best_epoch=best)
    assert run_check("min(val_loss) < first(val_loss) and final.val_loss < 1", env).passed
    assert asked == []
    assert run_check("best.val_loss == 0.2", env).passed
    assert run_check("best.val_loss < final.val_loss", env).passed
    assert asked == [1]


def test_metric_aliases_map_a_spec_name_to_the_logged_column() -> None:
    env = EvalEnv({"epoch": [1, 2], "eval_loss": [0.5, 0.4]}, best_epoch=2,
                  metric_aliases={"val_loss": "eval_loss"})
    outcome = run_check("final.val_loss < 0.45 and min(val_loss) == best.val_loss", env)
    assert outcome.passed
    assert compile_check("final.val_loss < 0.45").names == frozenset({"val_loss"})
    err = eval_error("final.val_los < 1", env)
    assert "closest: val_loss" in str(err)


def test_values_that_are_none_or_text_numbers_are_read() -> None:
    loose: dict[str, Any] = {"epoch": ["1", "2", "3"], "val_loss": [0.5, None, "0.25"]}
    env = EvalEnv(loose, best_epoch=None)
    assert run_check("final.val_loss == 0.25", env).passed
    assert is_nan(run_check("val_loss[1] < 1", env).value)


# --------------------------------------------------------------------------- NaN


def test_nan_fails_every_comparison_even_negated_ones() -> None:
    env = make_env(val_loss=[0.9, 0.6, NAN, 0.5, NAN])
    for source in (
        "final.val_loss < 1",
        "final.val_loss > 1",
        "final.val_loss != 0",
        "final.val_loss == final.val_loss",
        "not final.val_loss > 1",
        "not (final.val_loss < 1 and final.train_loss < 1)",
    ):
        outcome = run_check(source, env)
        assert outcome.passed is False, source
        assert "val_loss = nan at epoch 5 (final)" in outcome.text, outcome.text


def test_nan_in_a_series_makes_min_max_and_mean_nan() -> None:
    env = make_env(val_loss=[0.9, 0.6, NAN, 0.5, 0.55])
    outcome = run_check("min(val_loss) < first(val_loss)", env)
    assert outcome.passed is False
    assert is_nan(outcome.value)
    assert outcome.where == "at epoch 3 (min)"
    assert is_nan(run_check("max(val_loss) > 0", env).value)
    assert is_nan(run_check("mean(val_loss) > 0", env).value)
    assert is_nan(run_check("argmin(val_loss) > 0", env).value)
    assert is_nan(run_check("min(final.val_loss, val_loss[2]) < 1", env).value)
    assert run_check("min(val_loss[3:]) == 0.5", env).passed  # the slice has no NaN


def test_kleene_logic_lets_a_known_operand_decide() -> None:
    env = make_env(val_loss=[NAN] * 5)
    assert run_check("final.val_loss < 1 or final.train_loss < 1", env).passed
    assert not run_check("final.val_loss < 1 and final.train_loss > 1", env).passed
    assert not run_check("final.val_loss < 1 and final.train_loss < 1", env).passed


def test_infinity_compares_like_a_number() -> None:
    env = make_env(val_loss=[0.9, 0.6, 0.4, 0.5, math.inf])
    outcome = run_check("final.val_loss < 10", env)
    assert not outcome.passed
    assert outcome.text == "val_loss = inf at epoch 5 (final); needs < 10"


# --------------------------------------------------------------------------- forbidden constructs


@pytest.mark.parametrize(
    ("source", "fragment", "offset"),
    [
        ("__import__('os')", "unknown function '__import__' at column 1; allowed: first, last", 0),
        ("open('f')", "unknown function 'open' at column 1; allowed: first, last, min, max", 0),
        ("exec('print(1)')", "unknown function 'exec'", 0),
        ("eval('1') > 0", "unknown function 'eval'", 0),
        ("final.val_loss < 1 and open('f')", "unknown function 'open'", 23),
        ("().__class__", "name '__class__' is not allowed", 3),
        ("x.__class__", "name '__class__' is not allowed", 2),
        ("final.__dict__ > 0", "name '__dict__' is not allowed", 6),
        ("__builtins__ > 0", "name '__builtins__' is not allowed", 0),
        ("val_loss.real > 0", "attribute access '.real' is not allowed", 8),
        ("val_loss.mean() > 0", "calling '.mean()' is not allowed", 8),
        ("lambda: 1", "lambda is not allowed", 0),
        ("final.val_loss < (lambda: 1)()", "only the listed functions can be called", 17),
        ("[x for x in y]", "a list comprehension is not allowed", 0),
        ("min(x for x in val_loss) < 1", "a generator expression is not allowed", 3),
        ("{x: 1 for x in y}", "a dict comprehension is not allowed", 0),
        ("final.val_loss if True else 0", "a conditional (x if c else y) is not allowed", 0),
        ("f'{val_loss}' > 0", "an f-string is not allowed", 0),
        ("(x := 1) > 0", "an assignment (:=) is not allowed", 1),
        ("min(*val_loss) < 1", "a starred expression (*x) is not allowed", 4),
        ("min(val_loss, key=1) < 1", "min() takes no keyword arguments", 14),
        ("'a' * 10 ** 9", "strings are not allowed", 0),
        ("b'x' > 0", "strings are not allowed", 0),
        ("1j > 0", "complex numbers are not allowed", 0),
        ("None", "None is not allowed", 0),
        ("final.val_loss < [1, 2]", "a list is not allowed", 17),
        ("final.val_loss in (1, 2)", "operator 'in' is not allowed", 15),
        ("final.val_loss is 1", "operator 'is' is not allowed", 15),
        ("final.val_loss << 2 > 0", "operator '<<' is not allowed", 15),
        ("final.val_loss & 1 > 0", "operator '&' is not allowed", 15),
        ("~1 > 0", "operator '~' is not allowed", 0),
        ("9**9**9", "exponent 387420489 is too large", 3),
        ("2 ** 65 > 1", "exponent 65 is too large", 5),
        ("2 ** -65 > 1", "exponent -65 is too large", 5),
        ("final.val_loss ** (2 ** 10) > 1", "exponent 1024 is too large", 19),
        ("val_loss[x] > 0", "an index must be a whole number", 9),
        ("val_loss[1.5] > 0", "an index must be a whole number", 9),
        ("val_loss[0:n] > 0", "a slice bound must be a whole number", 11),
        ("val_loss[::0][0] > 0", "a slice step cannot be zero", 11),
        ("val_loss[1, 2] > 0", "an index must be a whole number", 9),
        ("final.val_loss[0] > 0", "only a series (a column such as val_loss) can be indexed", 0),
        ("epoch[-1].val_loss > 0", "an epoch number cannot be negative", 6),
        ("epoch[n].val_loss > 0", "an epoch number must be a whole number", 6),
        ("val_loss[2].x > 0", "attribute access '.x' is not allowed", 11),
        ("final > 0", "'final' needs a column: final.<column>", 0),
        ("best", "'best' needs a column", 0),
        ("min > 0", "'min' is a function: call it", 0),
        ("val_loss < 1", "'val_loss' is a series (one value per epoch), not a number", 0),
        ("final.val_loss + val_loss > 0", "'val_loss' is a series", 17),
        ("final.val_loss", "a check must be true or false", 0),
        ("val_loss", "a check must be true or false", 0),
        ("final.val_loss + (1 < 2) > 0", "'1 < 2' is true/false, not a number", 18),
        ("final.val_loss and True", "'final.val_loss' is a number, but 'and' needs a comparison", 0),
        ("not final.val_loss", "'final.val_loss' is a number, but 'not' needs a comparison", 4),
        ("first(final.val_loss) > 0", "first() takes one series", 0),
        ("first(val_loss, val_loss) > 0", "first() takes one series", 0),
        ("len() > 0", "len() takes one series, e.g. len(val_loss); got no arguments", 0),
        ("abs(val_loss) > 0", "abs() takes one number", 0),
        ("min(val_loss, 1) > 0", "min() takes one series (min(val_loss)) or two or more numbers", 0),
        ("max(1) > 0", "max() takes one series", 0),
        ("final.val_loss <", "syntax error: the check ends too early", 16),
        ("min(val_loss", "syntax error: '(' was never closed", 3),
        ("", "check is empty", 0),
        ("   ", "check is empty", 0),
        ("final.val_loss < < 1", "syntax error: invalid syntax", 17),
        ("a\x00b", "a check cannot contain a NUL character", 1),
        ("1" * 5000, "characters long; at most 2000 are allowed", 0),
    ],
)
def test_forbidden_constructs_name_the_construct_and_its_column(
    source: str, fragment: str, offset: int
) -> None:
    err = compile_error(source)
    assert fragment in str(err)
    assert err.offset == offset, str(err)
    assert err.source == source
    assert f"at column {offset + 1}" in str(err)
    assert "\n" not in str(err)


def test_offsets_count_characters_not_bytes() -> None:
    err = compile_error("final.é < 1 and open('x')")
    assert err.offset == 16


def test_offsets_point_into_a_multi_line_check_as_written() -> None:
    source = "\n  final.val_loss < 1 and\n  open('x')\n"
    err = compile_error(source)
    assert source[err.offset:].startswith("open")
    assert run_check("final.val_loss < 1\n  and final.val_loss > 0").passed
    err = compile_error("  min(val_loss")
    assert err.offset == 5


def test_huge_exponents_fail_fast_at_runtime_too() -> None:
    env = make_env(big=[100.0] * 5)
    assert "exponent 100 in 2 ** final.big is too large" in str(eval_error("2 ** final.big > 1", env))
    assert "1e+300 ** 2 overflows" in str(eval_error("final.big > 1e300 ** 2", env))


def test_deep_nesting_is_an_expr_error_not_a_recursion_error() -> None:
    for source in ("-" * 1900 + "1 > 0", "not " * 400 + "True",
                   "abs(" * 300 + "1" + ")" * 300 + " > 0", "1 + " * 400 + "1 > 0"):
        err = compile_error(source)
        assert "nested too deeply" in str(err) or "too many nested" in str(err), str(err)
    # Parentheses alone add no depth.
    assert run_check("(" * 150 + "final.val_loss" + ")" * 150 + " > 0").passed


def test_non_string_checks_are_refused() -> None:
    for value in (5, None, ["final.val_loss > 0"], 1.5):
        err = compile_error(value)  # type: ignore[arg-type]
        assert "a check must be a string" in str(err)


MARKER_ATTACKS = [
    "__import__('os').system('touch {m}')",
    "open('{m}', 'w')",
    "exec(\"open('{m}', 'w')\")",
    "eval(\"open('{m}', 'w')\")",
    "compile(\"open('{m}', 'w')\", 'x', 'exec')",
    "(lambda: open('{m}', 'w'))()",
    "[open('{m}', 'w') for x in (1,)]",
    "().__class__.__base__.__subclasses__()",
    "final.__class__.__init__.__globals__['os'].system('touch {m}')",
    "max(open('{m}', 'w'))",
    "min(val_loss) < (open('{m}', 'w') and 1)",
    "f\"{{open('{m}', 'w')}}\"",
    "(x := open('{m}', 'w'))",
    "getattr(final, 'x')",
    "breakpoint()",
    "val_loss.append(open('{m}', 'w'))",
]


@pytest.mark.parametrize("template", MARKER_ATTACKS)
def test_no_attack_runs_anything(template: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    source = template.format(m=marker)
    with pytest.raises(ExprError):
        compile_check(source).evaluate(make_env())
    assert not marker.exists()


# --------------------------------------------------------------------------- evaluation errors


def test_unknown_column_suggests_the_closest_names() -> None:
    err = eval_error("min(val_los) < 1")
    assert str(err) == "unknown column 'val_los' at column 5; closest: val_loss"
    assert err.offset == 4
    err = eval_error("final.zzz > 0")
    assert str(err).startswith("unknown column 'zzz' at column 1; the log has: epoch, lr, train_loss")


def test_best_epoch_unknown_is_a_clear_error() -> None:
    err = eval_error("best.val_loss < 1", make_env(best_epoch=None))
    assert "best.val_loss: best epoch unknown" in str(err)
    err = eval_error("best.val_loss < 1", make_env(best_epoch=99))
    assert "the best epoch 99 is not in the log (the log has epochs 1-5)" in str(err)


def test_missing_epoch_row_is_a_clear_error() -> None:
    err = eval_error("epoch[50].val_loss < 1")
    assert str(err) == ("epoch[50].val_loss: no row with epoch 50 (the log has epochs 1-5) "
                        "at column 1")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("final.val_loss / (final.val_loss - final.val_loss) > 1", "division by zero in"),
        ("final.val_loss // 0 > 1", "division by zero"),
        ("final.val_loss % 0 > 1", "division by zero"),
        ("first(val_loss[10:]) > 0", "first(val_loss[10:]): the series is empty"),
        ("mean(val_loss[:0]) > 0", "the series is empty"),
        ("min(val_loss[5:]) > 0", "the series is empty"),
        ("argmax(val_loss[5:]) > 0", "the series is empty"),
        ("val_loss[7] > 0", "val_loss[7]: index 7 is out of range (the series has 5 values)"),
        ("val_loss[-6] > 0", "index -6 is out of range"),
        ("(final.val_loss - 1) ** 0.5 > 0", "a negative number to a fractional power"),
        ("(final.val_loss - final.val_loss) ** -1 > 0", "zero to a negative power"),
    ],
)
def test_data_that_cannot_be_evaluated_gives_an_expr_error(source: str, fragment: str) -> None:
    err = eval_error(source)
    assert fragment in str(err)
    assert " at column " in str(err)


def test_empty_log() -> None:
    env = EvalEnv({"epoch": [], "val_loss": []}, best_epoch=None)
    assert "the log has no rows" in str(eval_error("final.val_loss < 1", env))
    assert run_check("len(val_loss) == 0", env).passed


def test_bad_env_values_are_expr_errors() -> None:
    broken: dict[str, Any] = {"epoch": [1, 2], "val_loss": [0.5, "oops"]}
    env = EvalEnv(broken, best_epoch=None)
    assert "column 'val_loss': row 2 is not a number" in str(eval_error("final.val_loss < 1", env))
    with pytest.raises(ExprError):
        compile_check("True").evaluate({"columns": {}})  # type: ignore[arg-type]


def test_short_circuit_lets_a_guard_protect_an_index() -> None:
    short = make_env(val_loss=[0.5, 0.4])
    assert not run_check("len(val_loss) >= 5 and val_loss[-5] > val_loss[-1]", short).passed
    assert run_check("len(val_loss) < 5 or val_loss[-5] > val_loss[-1]", short).passed


# --------------------------------------------------------------------------- errors module


def test_error_types_are_one_line_and_pickle() -> None:
    failure = GateFailure("val_loss = 0.900 at epoch 3 (final); needs < 0.5", measured=0.9,
                          threshold="< 0.5")
    errors: list[MlgatesError] = [
        ExprError("bad\ncheck at column 3", offset=2, source="a b"),
        GateFileError("x.gates.yaml:3:5: bad", file="x.gates.yaml", line=3, column=5),
        RunDirError("runs/x/training_log.csv: not found", file="runs/x/training_log.csv"),
        failure,
        MlgatesError("plain"),
    ]
    for err in errors:
        assert isinstance(err, MlgatesError)
        assert "\n" not in str(err)
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err)
        assert copy.__dict__ == err.__dict__
    assert str(errors[0]) == "bad check at column 3"
    assert (failure.measured, failure.threshold) == (0.9, "< 0.5")
    assert str(GateFailure("only a message")) == "only a message"


# --------------------------------------------------------------------------- many checks
# How fast they compile is bench/plugin_overhead.py's business (no wall clock in tests).


def test_a_thousand_checks_compile() -> None:
    sources = [f"min(val_loss[-{i % 9 + 1}:]) < first(val_loss) * 0.9 and final.val_recall_{i} > 0"
               for i in range(1000)]
    checks = [compile_check(source) for source in sources]
    assert all(isinstance(check, Check) for check in checks)
    assert checks[7].names == frozenset({"val_loss", "val_recall_7"})
