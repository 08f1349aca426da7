"""Small helpers every gate family shares: number formatting, the one-line message, the
log's columns a gate names (``columns:``)."""

from __future__ import annotations

import fnmatch
import math
from typing import TYPE_CHECKING, Any

from pytest_mlgates.errors import GateFailure
from pytest_mlgates.gates import GateResult
from pytest_mlgates.gates.params import MutationsFn

if TYPE_CHECKING:
    from pytest_mlgates.gates import GateContext
    from pytest_mlgates.rundir import Run


def fmt(value: Any) -> str:
    """``0.000`` style; tiny or huge numbers keep their significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0 or 1e-3 <= abs(v) < 1e6:
        return f"{v:.3f}"
    return f"{v:.3g}"


def fmt_threshold(value: Any) -> str:
    """Thresholds as the user typed them (``0.65``, not ``0.650``)."""
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def epoch_label(epochs: list[float], index: int, tag: str | None = None) -> str:
    """``at epoch 12 (final)``."""
    n = len(epochs)
    epoch = epochs[index] if -n <= index < n else float("nan")
    shown = str(int(epoch)) if math.isfinite(epoch) else "?"
    return f"at epoch {shown}" + (f" ({tag})" if tag else "")


def row_where(log: Any, row: int, tag: str | None = None) -> str:
    """Where a row of ``log`` is: ``at epoch 12 (final)`` in a log of epochs (as
    :func:`epoch_label`), ``at step 150000 (final)`` in a log of steps (with the row's
    epoch when the log has one: ``at step 1500 (epoch 2)``)."""
    if log.index == "epoch":
        return epoch_label(log.labels, row, tag)
    return str(log.where(row, tag))


def verdict(passed: bool, what: str, value: str, where: str, threshold: str, *, note: str = "") -> GateResult:
    """``<what> = <value> <where>; needs <threshold>`` -- the spec's failure line."""
    where = f" {where}" if where else ""
    note = f" ({note})" if note else ""
    return GateResult(passed, value, threshold, f"{what} = {value}{where}; needs {threshold}{note}")


def as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return [str(value)]
    return [str(v) for v in value]


def require(condition: bool, message: str) -> None:
    if not condition:
        raise GateFailure(message)


def is_loss(metric: str) -> bool:
    low = metric.lower()
    return "loss" in low or "error" in low


def engine_only(gate: str) -> MutationsFn:
    """The mutations of a gate that reads files only the bundled engine writes: none, and
    why, on any other format's run (the engine's format has its own ``gate_<name>``)."""
    def no_mutation(m: Any, params: dict[str, Any]) -> tuple[list[Any], str]:
        return [], f"no mutation: {gate} reads files only the engine writes; a {m.run.format} run has none"

    return no_mutation


def select_columns(run: Run, wanted: list[str] | None, ctx: GateContext) -> list[str]:
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


def nonempty(run: Run) -> None:
    if len(run.log) == 0:
        raise GateFailure(f"{run.shown(run.log.source)}: no rows (header only)")
