"""Gates that judge the run's scores against something outside it: a perfect score against
what an honest model could reach by chance on that many samples (``suspicious_perfection``),
and every metric against a ``--baseline-run`` (``baseline``).

Log-only, no heavy imports, like ``log.py``.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

from pytest_mlgates.errors import GateFailure, RunDirError
from pytest_mlgates.formats._mutations import Mutation, Mutations, as_names, combine
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import (
    as_list,
    fmt,
    fmt_threshold,
    nonempty,
    row_where,
    select_columns,
    verdict,
)
from pytest_mlgates.rundir import Run, default_mode

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
    nonempty(run)
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
        names = select_columns(run, wanted, ctx)
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
    "baseline",
    "suspicious_perfection",
]
