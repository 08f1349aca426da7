"""Gates on what the log says the model learned: the monitored metric improved
(``converged``), every class is recalled (``class_recall``, its counts weighed by
``rates.py``), train and val agree (``generalization_gap``), no memorization.

Log-only, no heavy imports, like ``log.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import GateFailure
from pytest_mlgates.formats._mutations import (
    Mutation,
    MutationError,
    Mutations,
    as_names,
    combine,
)
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import (
    as_list,
    fmt,
    fmt_threshold,
    is_loss,
    nonempty,
    row_where,
    select_columns,
    verdict,
)
from pytest_mlgates.rundir import Run, best_index, default_mode

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
    nonempty(run)
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
    nonempty(run)
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
        names = select_columns(run, as_list(params["columns"]), ctx)
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
    nonempty(run)
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
    nonempty(run)
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


__all__ = [
    "class_recall",
    "converged",
    "generalization_gap",
    "memorization",
]
