"""Gates that read only the training log (and the run's small JSON files).

No heavy imports: these run in milliseconds, which is why in-flight gates are mostly these.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import GateFailure, RunDirError
from pytest_mlgates.formats._mutations import (
    Mutation,
    MutationError,
    Mutations,
    as_names,
    blank_last,
    combine,
)
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import as_list, fmt, fmt_threshold, is_loss, row_where, verdict
from pytest_mlgates.rundir import Run, best_index, default_mode
from pytest_mlgates.runlog import number_text

REQUIRED_COLUMNS = ("epoch", "train_loss", "val_loss")


def _select(run: Run, wanted: list[str] | None, ctx: GateContext) -> list[str]:
    """Column names chosen by ``columns:`` (names or globs, aliases applied); all when None."""
    log = run.log
    if wanted is None:
        return list(log.columns)
    chosen: list[str] = []
    for pattern in wanted:
        real = ctx.metric_aliases.get(pattern, pattern)
        matches = [c for c in log.columns if fnmatch.fnmatchcase(c, real)]
        if not matches and real != pattern:  # a map to another trainer's name: this run uses the spec's
            matches = [c for c in log.columns if fnmatch.fnmatchcase(c, pattern)]
        if not matches:
            raise GateFailure(
                f"{run.shown(log.source)}: no column matches '{real}' (columns: {', '.join(log.columns)[:200]})"
            )
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _nonempty(run: Run) -> None:
    if len(run.log) == 0:
        raise GateFailure(f"{run.shown(run.log.source)}: no rows (header only)")


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
    _nonempty(run)
    columns = _select(run, as_list(params["columns"]), ctx)
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
    for name in _select(run, wanted, ctx) if wanted else header:
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
    for name in _select(run, wanted, ctx) if wanted else header:
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


# --------------------------------------------------------------------------- converged


def converged_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    metric = m.real(str(params.get("metric") or "val_loss"))

    def flat(run: Path) -> None:
        editor = m.open_log(run)
        handles = editor.cells(metric) if metric in editor.columns() else []
        if not handles:
            raise MutationError(f"no cell of {metric} in the log")
        first = editor.get(metric, handles[0])
        for handle in handles:
            editor.set(metric, handle, first)
        editor.save()

    return [Mutation(f"converged:{metric}", f"{metric} made flat (every epoch = the first)", flat)], ""


@p.gate(doc="the best value improves on the first epoch by a relative margin",
        params={"metric": p.Param(p.string, "val_loss"), "mode": p.Param(p.mode),
                "min_improvement": p.Param(p.nonneg, 0.1)},
        mutations=converged_mutations)
def converged(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    metric = params["metric"]
    mode = params["mode"] or default_mode(metric)
    need = float(params["min_improvement"])
    values, rows = run.series(metric, ctx.metric_aliases)
    _nonempty(run)
    log = run.log
    threshold = f">= {fmt_threshold(need * 100)}% improvement"
    if not len(values):
        raise GateFailure(f"{run.shown(log.source)}: {metric} holds no value")
    first = float(values[0])
    if not math.isfinite(first):
        return verdict(False, f"first({metric})", fmt(first), row_where(log, int(rows[0])), threshold)
    i = best_index(values, mode)
    assert i is not None  # the first value is finite
    best = float(values[i])
    gain = (first - best) if mode == "min" else (best - first)
    rel = gain / max(abs(first), 1e-12)
    value = f"{rel * 100:.1f}%"
    where = f"({fmt(first)} {row_where(log, int(rows[0]))} -> {fmt(best)} {row_where(log, int(rows[i]))}, {mode})"
    return verdict(rel >= need, f"{metric} improvement", value, where, threshold)


# --------------------------------------------------------------------------- class_recall


def class_recall_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    classes = as_names(params.get("classes"))
    if classes:
        cols = [m.real(f"val_recall_{c}") for c in classes]
    else:
        cols = [c for pattern in (as_names(params.get("columns")) or ["val_recall_*"]) for c in m.matching(pattern)]
    if not cols:
        return [], f"no mutation: no val_recall_* column in {m.log_name}"
    return [Mutation(f"class_recall:{cols[0]}", f"{cols[0]} set to 0 in every epoch",
                     m.set_log(cols[:1], lambda i, v: 0.0))], ""


@p.gate(doc="every class's recall (with confidence:, its lower confidence bound from the counts) "
            "is strictly above a floor",
        params={"floor": p.Param(p.number, 0.0), "classes": p.Param(p.strings),
                "columns": p.Param(p.strings, "val_recall_*"), "at": p.Param(p.at, "final"),
                "confidence": p.Param(p.confidence)},
        mutations=class_recall_mutations)
def class_recall(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    floor = float(params["floor"])
    at = params["at"]
    _nonempty(run)
    log = run.log
    classes = as_list(params["classes"])
    names: list[str]
    if classes is not None:
        names = [ctx.metric_aliases.get(f"val_recall_{c}", f"val_recall_{c}") for c in classes]
        missing = [n for n in names if n not in log.columns]
        if missing:
            raise GateFailure(f"{run.shown(log.source)}: no column {missing[0]} (recall columns: "
                              f"{', '.join(c for c in log.columns if 'recall' in c)[:200]})")
    else:
        names = _select(run, as_list(params["columns"]), ctx)
    if at == "final":
        tag: str | None = "final"
    elif at == "best":
        if run.best_epoch is None:
            raise GateFailure(f"{run.shown(log.source)}: no best epoch for monitor '{run.monitor[0]}'")
        tag = f"best {run.monitor[0]}"
    else:
        tag = None
    worst: tuple[float, int, str] | None = None
    cells: list[tuple[str, int]] = []
    for name in names:
        values = log.array(name)
        for r in _rows_at(run, name, at):
            cells.append((name, r))
            v = float(values[r])
            key = v if math.isfinite(v) else -math.inf
            if worst is None or key < worst[0]:
                worst = (key, r, name)
    threshold = f"> {fmt_threshold(floor)}"
    if worst is None:
        raise GateFailure(f"{run.shown(log.source)}: no recall column selected")
    value_f, r, name = worst
    shown = fmt(float(log.array(name)[r]))
    passed = value_f > floor
    if passed and params.get("confidence") is not None:
        # every recall clears the floor; with confidence: its lower bound must (gates/rates.py).
        # A recall at or below the floor needs no counts: its lower bound is no higher.
        from pytest_mlgates.gates.rates import weigh

        return weigh(run, cells, floor, float(params["confidence"]), ctx, tag, len(names), at)
    if passed:
        return GateResult(True, shown, threshold,
                          f"min recall over {len(names)} classes = {shown} ({name} {row_where(log, r, tag)}); needs {threshold}")
    return verdict(False, name, shown, row_where(log, r, tag), threshold)


def _rows_at(run: Run, name: str, at: str) -> list[int]:
    """The rows of ``name`` a gate reads ``at`` ``final``, ``best`` or ``all``: in a log of
    epochs the last row, the best epoch's row, every row; in a log of steps the column's
    last value, its value at the best step, every value it holds."""
    log = run.log
    if at == "final":
        last = log.last_row(name)
        return [] if last is None else [last]
    if at == "best":
        import numpy as np

        same = np.flatnonzero(log.labels == run.best_epoch)
        if not log.sparse:
            return [int(same[0])] if same.size else []
        mask = log.held(name)
        same = same if mask is None else same[mask[same]]
        return [int(same[-1])] if same.size else []
    return [int(r) for r in log.rows_of(name)]


# --------------------------------------------------------------------------- generalization_gap


def _paired(run: Run, train_name: str, val_name: str, ctx: GateContext) -> tuple[Any, Any, Any]:
    """(train, val, row positions) compared row by row: every row of a log of epochs; in a
    log of steps the rows that hold the validation value, each with the last training
    value logged at or before it."""
    log = run.log
    train_real = run.real_column(train_name, ctx.metric_aliases)
    val, rows = run.series(val_name, ctx.metric_aliases)
    return log.as_of(train_real, rows), val, rows


def generalization_gap_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    train = m.real(str(params.get("train") or "train_accuracy"))
    val = m.real(str(params.get("val") or "val_accuracy"))
    loss = "loss" in train.lower() or "loss" in val.lower()
    high, low = (val, train) if loss else (train, val)
    return [Mutation(f"gap:{train}:{val}", f"{high} raised to 1e3, {low} lowered to 0" if loss
                     else f"{train} raised to 1, {val} lowered to 0",
                     combine(m.set_log([high], lambda i, v: 1e3 if loss else 1.0),
                             m.set_log([low], lambda i, v: 0.0)))], ""


@p.gate(doc="train and val metrics at the final epoch are within max_gap",
        params={"train": p.Param(p.string, "train_accuracy"), "val": p.Param(p.string, "val_accuracy"),
                "max_gap": p.Param(p.nonneg, 0.1), "at": p.Param(p.at, "final")},
        mutations=generalization_gap_mutations)
def generalization_gap(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    train_name, val_name = params["train"], params["val"]
    max_gap = float(params["max_gap"])
    train, val, positions = _paired(run, train_name, val_name, ctx)
    _nonempty(run)
    log = run.log
    if not len(val):
        raise GateFailure(f"{run.shown(log.source)}: {val_name} holds no value")
    loss = is_loss(train_name) or is_loss(val_name)
    rows: list[int] = list(range(len(val))) if params["at"] == "all" else [len(val) - 1]
    if params["at"] == "best" and run.best_epoch is not None:
        best = [i for i, p in enumerate(positions) if log.labels[p] == run.best_epoch]
        rows = best[-1:] if log.sparse else best[:1]
    worst_gap, worst_row = -math.inf, rows[-1] if rows else len(val) - 1
    for r in rows:
        gap = (val[r] - train[r]) if loss else (train[r] - val[r])
        if math.isnan(gap):
            gap = math.inf
        if gap > worst_gap:
            worst_gap, worst_row = float(gap), r
    what = f"{val_name} - {train_name}" if loss else f"{train_name} - {val_name}"
    tag = "final" if params["at"] == "final" else ("best" if params["at"] == "best" else None)
    where = row_where(log, int(positions[worst_row]), tag) + f" ({fmt(float(train[worst_row]))} vs {fmt(float(val[worst_row]))})"
    return verdict(worst_gap <= max_gap, what, fmt(worst_gap), where, f"<= {fmt_threshold(max_gap)}")


# --------------------------------------------------------------------------- memorization


def memorization_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    names = {k: m.real(str(params.get(k) or k)) for k in
             ("train_loss", "val_loss", "train_accuracy", "val_accuracy")}
    steps = [m.set_log([names["train_loss"]], lambda i, v: 1e-4),
             m.set_log([names["val_loss"]], lambda i, v: 1.0 + 2.0 * i)]
    if names["train_accuracy"] in m.log_columns and names["val_accuracy"] in m.log_columns:
        steps += [m.set_log([names["train_accuracy"]], lambda i, v: 1.0),
                  m.set_log([names["val_accuracy"]], lambda i, v: 0.1)]
    return [Mutation("memorization:" + ",".join(names.values()),
                     "train loss to ~0 (and train accuracy to 1) while val loss climbs", combine(*steps))], ""


@p.gate(doc="the model did not memorize the training set while val got worse",
        params={"train_loss": p.Param(p.string, "train_loss"), "val_loss": p.Param(p.string, "val_loss"),
                "max_rise": p.Param(p.nonneg, 0.5), "min_train_ratio": p.Param(p.nonneg, 0.5),
                "train_accuracy": p.Param(p.string, "train_accuracy"),
                "val_accuracy": p.Param(p.string, "val_accuracy"),
                "max_accuracy_gap": p.Param(p.nonneg, 0.2), "perfect": p.Param(p.number, 0.999)},
        mutations=memorization_mutations)
def memorization(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    """RED when the model memorizes: val loss climbs from its minimum while train loss keeps
    falling, or train accuracy is perfect while val accuracy trails far behind.

    Rule 1 (losses): with m the epoch of min(val_loss), RED when
    ``val_loss[final] > (1 + max_rise) * val_loss[m]`` and
    ``train_loss[final] <= min_train_ratio * train_loss[m]``.
    Rule 2 (accuracies, when logged): RED when ``train_accuracy[final] >= perfect`` and
    ``train_accuracy[final] - val_accuracy[final] > max_accuracy_gap``.
    """
    aliases = ctx.metric_aliases
    tl_array, vl_array, positions = _paired(run, params["train_loss"], params["val_loss"], ctx)
    _nonempty(run)
    log = run.log
    tl, vl = tl_array.tolist(), vl_array.tolist()
    epochs = log.labels[positions].tolist()
    word = log.index
    max_rise, ratio = float(params["max_rise"]), float(params["min_train_ratio"])
    m = best_index(vl, "min")
    if m is None:
        return verdict(False, params["val_loss"], "nan", f"at every {word}", "a finite value")
    final = len(vl) - 1
    rise = (vl[final] - vl[m]) / max(abs(vl[m]), 1e-12) if math.isfinite(vl[final]) else math.inf
    train_fell = math.isfinite(tl[final]) and math.isfinite(tl[m]) and tl[final] <= ratio * tl[m]
    if rise > max_rise and train_fell:
        return GateResult(
            False, f"{rise * 100:.0f}% rise", f"val rise <= {fmt_threshold(max_rise * 100)}%",
            f"{params['val_loss']} rose {rise * 100:.0f}% from its minimum at {word} {int(epochs[m])} "
            f"({fmt(vl[m])} -> {fmt(vl[final])} at {word} {int(epochs[final])}) while {params['train_loss']} "
            f"fell to {fmt(tl[final])}; needs a rise <= {fmt_threshold(max_rise * 100)}%",
        )
    ta_name, va_name = params["train_accuracy"], params["val_accuracy"]
    ta_real, va_real = aliases.get(ta_name, ta_name), aliases.get(va_name, va_name)
    if ta_real in log and va_real in log:
        ta_row, va_row = log.last_row(ta_real), log.last_row(va_real)
        ta = float(log.array(ta_real)[ta_row]) if ta_row is not None else math.nan
        va = float(log.array(va_real)[va_row]) if va_row is not None else math.nan
        gap = ta - va
        if ta >= float(params["perfect"]) and gap > float(params["max_accuracy_gap"]):
            return GateResult(
                False, f"{fmt(ta)} vs {fmt(va)}", f"gap <= {fmt_threshold(params['max_accuracy_gap'])}",
                f"{ta_name} = {fmt(ta)} while {va_name} = {fmt(va)} "
                f"{row_where(log, va_row if va_row is not None else len(log) - 1, 'final')}; "
                f"needs a gap <= {fmt_threshold(params['max_accuracy_gap'])} when training accuracy is perfect",
            )
    return GateResult(
        True, f"{rise * 100:.0f}% rise", f"val rise <= {fmt_threshold(max_rise * 100)}%",
        f"{params['val_loss']} = {fmt(vl[final])} {row_where(log, int(positions[final]), 'final')}, "
        f"{rise * 100:.0f}% above its minimum {fmt(vl[m])} ({word} {int(epochs[m])}); needs a rise <= "
        f"{fmt_threshold(max_rise * 100)}% while train loss falls: no sign of memorization",
    )


# --------------------------------------------------------------------------- suspicious_perfection

_PERFECTION_DEFAULTS = ("val_accuracy", "val_auroc", "val_macro_f1")
_PERFECTION_GLOBS = ("val_*auroc*", "val_*acc*", "val_*f1*")
#: Split names a metric's prefix may use, and the splits.json keys of each.
_SPLIT_NAMES = {"val": ("val", "valid", "validation", "eval", "dev"), "test": ("test",)}
#: Log columns that say how many samples a split's metrics were measured on.
_COUNT_COLUMNS = ("{s}_samples", "{s}_n", "n_{s}", "{s}_size", "{s}_count", "num_{s}_samples")


def _split_of(metric: str) -> str:
    head = metric.split("_", 1)[0].split("/", 1)[0].lower()
    return "test" if head == "test" else "val"


def _sample_count(run: Run, metric: str, row: int, params: dict[str, Any],
                  ctx: GateContext) -> tuple[int | None, str]:
    """(how many samples ``metric`` was measured on at log row ``row``, where that number
    comes from): the gate's ``samples:``, a count column of the log (``val_samples``,
    ``eval_samples``...), else the length of the split in the run's splits file.  ``(None,
    why)`` when nothing says: the gate does not guess."""
    if params.get("samples") is not None:
        return int(params["samples"]), "samples: in the gate file"
    log = run.log
    names = _SPLIT_NAMES[_split_of(metric)]
    for pattern in _COUNT_COLUMNS:
        for split in names:
            wanted = pattern.format(s=split)
            column = ctx.metric_aliases.get(wanted, wanted)
            if column not in log:
                continue
            value = float(log.array(column)[row])
            if math.isfinite(value) and value >= 1 and value.is_integer():
                return int(value), f"{column} in {run.shown(log.source)}"
    try:
        splits = run.splits
    except RunDirError as exc:
        return None, f"the splits file is unreadable: {exc}"
    if isinstance(splits, dict):
        for key in names:
            indices = splits.get(key)
            if isinstance(indices, list) and indices:
                return len(indices), f"'{key}' of {run.splits_file}"
    return None, ""


def suspicious_perfection_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    wanted = as_names(params.get("metrics"))
    if wanted:
        cols = [c for pattern in wanted for c in m.matching(pattern)]
    else:
        cols = [m.real(c) for c in _PERFECTION_DEFAULTS if m.real(c) in m.log_columns]
        cols += [c for g in _PERFECTION_GLOBS for c in m.matching(g) if c not in cols]
    if not cols:
        return [], f"no mutation: no val accuracy/AUROC/F1 column in {m.log_name}"
    at = float(params.get("at", 1.0) or 1.0)
    return [Mutation(f"perfection:{cols[0]}:{at}", f"{cols[0]} set to {at} in every epoch",
                     m.set_log(cols[:1], lambda i, v: at))], ""


@p.gate(doc="no val accuracy/AUROC/F1 reaches a perfect score on enough samples to make it "
            "implausible for an honest model (leak smell)",
        params={"metrics": p.Param(p.strings), "at": p.Param(p.number, 1.0), "samples": p.Param(p.pos_int),
                "honest": p.Param(p.probability), "confidence": p.Param(p.probability, 0.95)},
        mutations=suspicious_perfection_mutations)
def suspicious_perfection(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    """RED when a val score reaches ``at`` (1.0) on enough samples to make it implausible.

    A perfect score on n samples is what a model right with probability ``honest`` (0.99)
    scores with probability ``honest ** n``: likely on 54 samples (0.58), unlikely on 400
    (0.018).  So a score >= ``at`` is RED when an honest model would reach it with
    probability below ``1 - confidence`` (an exact binomial tail, ``pytest_mlgates.stats``):
    from 299 samples for a perfect score with the defaults.  Below that it is GREEN and its
    line says how likely it was.  Where the number of samples is unknown (no ``samples:``,
    no ``val_samples`` column, no splits file) a score >= ``at`` stays RED and the line says
    so rather than guessing.  See docs/gates.md."""
    from pytest_mlgates.stats import binomial_tail, perfect_score_n

    log = run.log
    _nonempty(run)
    at = float(params["at"])
    honest = float(params["honest"]) if params.get("honest") is not None else max(at - 0.01, 1e-6)
    alpha = 1.0 - float(params["confidence"])
    wanted = as_list(params["metrics"])
    if wanted is None:
        names = [c for c in log.columns
                 if c in _PERFECTION_DEFAULTS or any(fnmatch.fnmatchcase(c, g) for g in _PERFECTION_GLOBS)]
        names += [ctx.metric_aliases[d] for d in _PERFECTION_DEFAULTS
                  if d in ctx.metric_aliases and ctx.metric_aliases[d] in log.columns and ctx.metric_aliases[d] not in names]
        if not names:
            raise GateFailure(f"{run.shown(log.source)}: no val accuracy/AUROC/F1 column to check")
    else:
        names = _select(run, wanted, ctx)
    threshold = f"< {fmt_threshold(at)}"
    top: tuple[float, int, str] | None = None
    plausible: str | None = None
    for name in names:
        values, _ = log.series(name)
        rows = log.rows_of(name)
        for i, v in enumerate(values.tolist()):
            if not math.isfinite(v):
                continue
            if top is None or v > top[0]:
                top = (v, int(rows[i]), name)
            if v < at:
                continue
            n, source = _sample_count(run, name, int(rows[i]), params, ctx)
            where = row_where(log, int(rows[i]))
            if n is None:
                why = f"; {source}" if source else ""
                return verdict(False, name, fmt(v), where, threshold, note=(
                    "a perfect val score usually means leaked data or a shortcut; the number of samples "
                    f"behind it is unknown, so it is not weighed: give samples: N or log val_samples{why}"))
            correct = min(n, math.ceil(v * n - 1e-9))  # at least the score observed
            chance = binomial_tail(correct, n, honest)
            odds = (f"a model right {fmt_threshold(round(honest * 100, 4))}% of the time scores that "
                    f"with probability {chance:.2g}")
            if chance < alpha:
                return verdict(False, name, fmt(v), f"{where} on {n} samples ({source})", threshold, note=(
                    f"{odds}, below {fmt_threshold(round(alpha, 6))}: leaked data or a shortcut?"))
            if plausible is None:
                least = perfect_score_n(honest, alpha) if at >= 1.0 else None
                from_n = f"; RED from {least} samples" if least else ""
                plausible = (f"{name} = {fmt(v)} {where} on {n} samples ({source}): {odds} "
                             f"(>= {fmt_threshold(round(alpha, 6))}), so not called a leak{from_n}")
    if plausible is not None:
        assert top is not None
        return GateResult(True, fmt(top[0]), threshold, plausible)
    if top is None:
        return GateResult(True, "nan", threshold, f"{', '.join(names)}: no finite value; nothing perfect")
    return GateResult(True, fmt(top[0]), threshold,
                      f"highest of {', '.join(names)} = {fmt(top[0])} ({top[2]} {row_where(log, top[1])}); needs {threshold}")


# --------------------------------------------------------------------------- baseline


def baseline_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    metrics = params.get("metrics") or {name: {"mode": mode} for name, mode in (m.run.tracked or [("val_loss", "min")])}
    if isinstance(metrics, list):
        metrics = {name: {} for name in metrics}
    worse = []
    for name, rule in metrics.items():
        mode = (rule.get("mode") if isinstance(rule, dict) else None) or default_mode(name)
        worse.append(m.set_log([m.real(name)], (lambda i, v: abs(v) * 10 + 1) if mode == "min"
                               else (lambda i, v: v - abs(v) - 1)))
    return [Mutation("baseline:" + ",".join(metrics), "every baseline metric made worse "
                     "than the baseline run", combine(*worse))], ""


@p.gate(doc="no metric is worse than the --baseline-run's by more than its tolerance",
        params={"metrics": p.Param(p.baseline_metrics)}, mutations=baseline_mutations)
def baseline(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    base = ctx.baseline
    if base is None:
        raise GateFailure("gate baseline: no baseline run; pass --baseline-run DIR")
    spec = params["metrics"]
    if spec is None:
        tracked = run.tracked or [("val_loss", "min")]
        spec = {m: {"mode": mode} for m, mode in tracked}
    elif isinstance(spec, list):
        spec = {m: {} for m in spec}
    failures: list[str] = []
    checked: list[str] = []
    first_value = first_threshold = None
    for metric, tol in spec.items():
        tol = tol or {}
        mode = tol.get("mode") or default_mode(metric)
        abs_tol, rel_tol = float(tol.get("abs", 0.0)), float(tol.get("rel", 0.0))
        ours, _ = run.series(metric, ctx.metric_aliases)
        theirs, _ = base.series(metric, ctx.metric_aliases)
        if not len(ours) or not len(theirs):
            empty = run if not len(ours) else base
            raise GateFailure(f"{empty.shown(empty.log.source)}: no rows of {metric} "
                              f"({'the run' if not len(ours) else 'the baseline'}); gate baseline needs its final value")
        mine, ref = float(ours[-1]), float(theirs[-1])
        slack = abs_tol + rel_tol * abs(ref)
        limit = ref + slack if mode == "min" else ref - slack
        ok = math.isfinite(mine) and (mine <= limit if mode == "min" else mine >= limit)
        cmp = "<=" if mode == "min" else ">="
        line = f"{metric} = {fmt(mine)} (final) vs baseline {fmt(ref)}; needs {cmp} {fmt(limit)}"
        checked.append(metric)
        if not ok:
            failures.append(line)
            if first_value is None:
                first_value, first_threshold = fmt(mine), f"{cmp} {fmt(limit)}"
    if failures:
        return GateResult(False, first_value, first_threshold, "; ".join(failures))
    return GateResult(True, f"{len(checked)} metrics", "within tolerance",
                      f"{', '.join(checked)} within tolerance of baseline {base.path}")


__all__ = [
    "RunDirError",
    "baseline",
    "class_recall",
    "converged",
    "finite_log",
    "generalization_gap",
    "log_complete",
    "memorization",
    "suspicious_perfection",
]
