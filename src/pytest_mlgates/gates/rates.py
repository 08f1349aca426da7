"""A rate weighed by its counts: ``class_recall``'s ``confidence:`` (SPEC "Honest numbers").

A recall of 1.0 on 3 samples is not evidence that the recall is above 0.8: with
``confidence: 0.95`` the floor applies to the lower end of the two-sided 95%
Clopper-Pearson interval of ``tp / n`` (0.292 for 3 of 3), where ``n`` is the class's
number of validation samples, read from the log (``val_support_<class>``, written by the
bundled engine) at the recall's own row, and ``tp = round(recall * n)``.  A run whose log
lacks the counts, or whose counts do not explain the recall, is UNVERIFIED in one line
(:class:`~pytest_mlgates.errors.Unverified`): the gate does not guess a sample size.
"""

from __future__ import annotations

import math

from pytest_mlgates.errors import Unverified
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates._common import fmt, fmt_threshold, row_where
from pytest_mlgates.rundir import Run


def support_name(column: str) -> str:
    """The count column of a rate column: ``val_recall_3`` -> ``val_support_3`` (``recall``
    -> ``support``, first occurrence); ``<column>_support`` for a column without ``recall``."""
    return column.replace("recall", "support", 1) if "recall" in column else f"{column}_support"


def _support_column(run: Run, name: str, ctx: GateContext) -> tuple[str | None, str]:
    """(the log's count column of rate column ``name``, or None; the name looked for first).
    A gate file's ``metrics:`` map counts too: with ``val_recall_a: eval_recall_a`` the
    count is what ``val_support_a`` maps to, else ``eval_support_a``."""
    wanted: list[str] = []
    for canonical, real in ctx.metric_aliases.items():
        if real == name and canonical != name:
            count = support_name(canonical)
            wanted.append(ctx.metric_aliases.get(count, count))
    wanted.append(support_name(name))
    found = next((w for w in wanted if w in run.log), None)
    return found, wanted[0]


def weigh(run: Run, cells: list[tuple[str, int]], floor: float, confidence: float, ctx: GateContext,
          tag: str | None, classes: int) -> GateResult:
    """GREEN when the ``confidence`` lower bound of every cell's rate (``(column, row)``) is
    above ``floor``; the line names the weakest bound with its counts."""
    from pytest_mlgates.stats import rate_lower_bound, successes

    log = run.log
    src = run.shown(log.source)
    level = f"{fmt_threshold(round(confidence * 100, 6))}%"
    needs = f"> {fmt_threshold(floor)}"
    problems: list[str] = []
    weakest: tuple[float, str, int, int, int] | None = None  # (bound, column, row, k, n)
    for name, row in cells:
        value = float(log.array(name)[row])
        where = row_where(log, row, tag)
        column, wanted = _support_column(run, name, ctx)
        if column is None:
            if not any(p.startswith(f"{name} = ") for p in problems):
                problems.append(f"{name} = {fmt(value)} {where}: no column {wanted} in {src} (the number of "
                                f"samples behind the rate), so its {level} lower bound cannot be computed")
            continue
        held = log.held(column)
        count = float(log.array(column)[row]) if held is None or bool(held[row]) else math.nan
        if not (math.isfinite(count) and count >= 0 and count.is_integer()):
            problems.append(f"{column} = {fmt(count)} {where} is not a count of samples, so the {level} "
                            f"lower bound of {name} cannot be computed")
            continue
        n = int(count)
        k = successes(value, n)
        if k is None:
            problems.append(f"{name} = {fmt(value)} {where} is not a whole number of the {n} samples of "
                            f"{column} ({value * n:.2f} of {n}), so its {level} lower bound cannot be computed")
            continue
        bound = rate_lower_bound(k, n, confidence)
        if weakest is None or bound < weakest[0]:
            weakest = (bound, name, row, k, n)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise Unverified(problems[0] + more)
    assert weakest is not None  # cells is not empty
    bound, name, row, k, n = weakest
    rate = fmt(float(log.array(name)[row]))
    where = row_where(log, row, tag)
    shown = f"{fmt(bound)} ({k}/{n})"
    threshold = f"{needs} ({level} lower bound)"
    if bound > floor:
        return GateResult(True, shown, threshold,
                          f"lowest {level} lower bound over {classes} classes = {fmt(bound)}: "
                          f"{name} = {rate} ({k}/{n}) {where}; needs {needs}")
    note = " (no sample of the class)" if n == 0 else ""
    return GateResult(False, shown, threshold,
                      f"{name} = {rate} ({k}/{n}) {where}, {level} lower bound {fmt(bound)}{note}; needs {needs}")
