"""Gates on the training log itself: every value finite, every column and epoch there.

No heavy imports: these run in milliseconds, which is why in-flight gates are mostly these.
"""

from __future__ import annotations

import math
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats._mutations import (
    Mutation,
    Mutations,
    as_names,
    blank_last,
)
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import (
    as_list,
    fmt,
    nonempty,
    row_where,
    select_columns,
)
from pytest_mlgates.rundir import Run
from pytest_mlgates.runlog import number_text

REQUIRED_COLUMNS = ("epoch", "train_loss", "val_loss")


# --------------------------------------------------------------------------- finite_log


def finite_log_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    cols = [c for pattern in as_names(params.get("columns")) for c in m.matching(pattern)]
    if not cols:
        cols = [m.real("val_loss")] if m.real("val_loss") in m.log_columns else m.log_columns[:1]
    if not cols:
        return [], f"{m.log_name} has no numeric column to write a NaN into"
    return [Mutation(f"finite_log:{cols[0]}", f"NaN written into {cols[0]} (last epoch)",
                     m.set_log(cols[:1], lambda i, v: float("nan"), rows="last"))], ""


@p.gate(doc="every logged value is finite (no NaN/Inf)",
        params={"columns": p.Param(p.strings)}, mutations=finite_log_mutations)
def finite_log(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    """Every cell of the chosen columns is a finite number.  In a log of epochs an empty
    cell fails too (``empty at epoch 3``); in a log of steps a column is checked over the
    rows that hold it (evaluation columns are empty on training rows by design)."""
    import numpy as np

    log = run.log
    nonempty(run)
    columns = select_columns(run, as_list(params["columns"]), ctx)
    bad: list[tuple[int, str, float, bool]] = []  # (row, column, value, empty cell)
    for name in columns:
        values, mask = log.array(name), log.held(name)
        wrong = ~np.isfinite(values)
        if log.sparse and mask is not None:
            wrong &= mask
        rows = np.flatnonzero(wrong)
        if rows.size:
            row = int(rows[0])
            bad.append((row, name, float(values[row]), mask is not None and not bool(mask[row])))
    if not bad:
        what = "epochs" if log.index == "epoch" else "rows"
        return GateResult(True, "all finite", "finite",
                          f"{len(columns)} columns finite over {len(log)} {what} of {run.shown(log.source)}")
    first_i, first_col, first_v, empty = min(bad)
    where = row_where(log, first_i)
    others = f"{len(bad)} columns non-finite" if len(bad) > 1 else ""
    value = f"{'empty' if empty else fmt(first_v)} {where}"
    return GateResult(False, value, "finite",
                      f"{first_col} = {value}; needs finite" + (f" ({others})" if others else ""))


# --------------------------------------------------------------------------- log_complete


def _step_problems(run: Run, params: dict[str, Any], ctx: GateContext) -> list[str]:
    """A log of steps is complete when it has the columns, its steps are whole numbers in
    order (rows of one step may repeat it: a training and an evaluation row), and every
    chosen column holds at least one value.  Empty cells are how a log of steps is
    written (evaluation every N steps), so they are not counted."""
    import numpy as np

    log = run.log
    src = run.shown(log.source)
    problems: list[str] = []
    header = list(log.columns)
    classes = run.class_names
    needed = ["step", "train_loss", "val_loss"] + [f"val_recall_{c}" for c in classes]
    missing = [ctx.metric_aliases.get(c, c) for c in needed
               if ctx.metric_aliases.get(c, c) not in header and c not in header]
    if missing:
        problems.append(f"{src}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if len(log) == 0:
        problems.append(f"{src}: no rows (header only)")
        return problems
    steps = log.labels
    whole = steps == np.floor(steps)
    if not whole.all():
        problems.append(f"{src}: non-integer step {number_text(float(steps[int(np.argmin(whole))]))}")
        return problems
    back = np.flatnonzero(np.diff(steps) < 0)
    if back.size:
        row = int(back[0]) + 1
        problems.append(f"{src}: steps not in order (step {number_text(float(steps[row]))} "
                        f"after step {number_text(float(steps[row - 1]))})")
    wanted = as_list(params["columns"])
    last = float(steps[-1])
    for name in select_columns(run, wanted, ctx) if wanted else header:
        mask = log.held(name)
        if mask is None:
            continue
        if not mask.any():
            problems.append(f"{src}: column {name} holds no value")
            break
        # a column logged every K steps whose last value is K or more steps before the end:
        # the evaluation that should close the log is missing (a run cut short, a lost row)
        held = np.unique(steps[mask])
        if held.size >= 2:
            every = float(np.max(np.diff(held)))
            if last - float(held[-1]) >= every:
                problems.append(f"{src}: column {name} ends at step {number_text(float(held[-1]))}, the log at step "
                                f"{number_text(last)} (it was logged every {number_text(every)} steps or less)")
                break
    return problems


def _problems(run: Run, params: dict[str, Any], ctx: GateContext) -> list[str]:
    log = run.log
    if log.sparse:
        return _step_problems(run, params, ctx)
    src = run.shown(log.source)
    problems: list[str] = []
    header = list(log.columns)
    classes = run.class_names
    needed = list(REQUIRED_COLUMNS) + [f"val_recall_{c}" for c in classes]
    missing = [ctx.metric_aliases.get(c, c) for c in needed
               if ctx.metric_aliases.get(c, c) not in header and c not in header]
    if missing:
        problems.append(f"{src}: missing column {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    if len(log) == 0:
        problems.append(f"{src}: no rows (header only)")
        return problems
    epochs = log.epochs
    if any(not float(e).is_integer() for e in epochs):
        problems.append(f"{src}: non-integer epoch {next(e for e in epochs if not float(e).is_integer())}")
        return problems
    ints = [int(e) for e in epochs]
    seen: set[int] = set()
    for e in ints:
        if e in seen:
            problems.append(f"{src}: epoch {e} appears twice")
            break
        seen.add(e)
    first = log.first_epoch  # the log's own numbering: Lightning's from 0, the engine's from 1
    expected = list(range(first, first + len(ints)))
    if not problems and ints != expected:
        gap = next((x for x in expected if x not in seen), None)
        problems.append(f"{src}: epochs not {first}..{first + len(ints) - 1} in order"
                        + (f" (epoch {gap} missing)" if gap is not None else ""))
    results = run.results
    if results is not None:
        done = results.get("epochs_completed")
        if isinstance(done, int) and done != len(ints):
            problems.append(f"{src}: {len(ints)} rows but training_results.json says epochs_completed = {done}")
    wanted = as_list(params["columns"])
    for name in select_columns(run, wanted, ctx) if wanted else header:
        if log.empty.get(name):
            problems.append(f"{src}: empty cell in column {name} at epoch {log.empty[name][0]}")
    history = run.metric_history() if log.kind == "engine" else None
    if history is not None:
        hsrc = run.shown(history.source)
        if list(history.columns) != header:
            problems.append(f"{hsrc}: columns differ from {src}")
        elif len(history) != len(log):
            problems.append(f"{hsrc}: {len(history)} rows, {src} has {len(log)}")
        else:
            for name in header:
                for i, (a, b) in enumerate(zip(log.columns[name], history.columns[name])):
                    same = (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= 1e-9 * max(1.0, abs(a))
                    if not same:
                        problems.append(f"{hsrc}: {name} at epoch {int(log.epochs[i])} is {fmt(b)}, {src} has {fmt(a)}")
                        break
                if len(problems) > 5:
                    break
    return problems


def log_complete_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    cols = [c for pattern in as_names(params.get("columns")) for c in m.matching(pattern)]
    column = cols[0] if cols else (m.real("val_loss") if m.real("val_loss") in m.log_columns
                                   else (m.log_columns[:1] or [""])[0])
    if not column:
        return [], f"{m.log_name} has no column to empty"
    return [Mutation(f"log_complete:{column}", f"{column} emptied at the last epoch of {m.log_name}",
                     blank_last(m.open_log, column))], ""


@p.gate(doc="the training log has every column and every epoch, and agrees with metric_history.json",
        params={"columns": p.Param(p.strings)}, mutations=log_complete_mutations)
def log_complete(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    problems = _problems(run, params, ctx)
    stopped = run.stopped_early()
    if stopped:
        problems.append(stopped)
    if problems:
        what = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        return GateResult(False, what, "complete log", "; ".join(problems))
    n = len(run.log)
    what = "epochs" if run.log.index == "epoch" else "rows"
    return GateResult(True, f"{n} {what}", "complete log",
                      f"{run.shown(run.log.source)}: {n} {what}, {len(run.log.columns)} columns, complete")


__all__ = [
    "REQUIRED_COLUMNS",
    "RunDirError",
    "finite_log",
    "log_complete",
]
