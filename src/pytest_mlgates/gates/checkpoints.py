"""Gates that check the checkpoint files a run left: best_checkpoints, resume_point.

Each reads what a checkpoint records (its epoch, its monitored value, which state it holds)
against the run's log; neither builds a model (``gates/rebuild.py`` has the gates that do).
Checkpoints are opened through ``Run.checkpoint`` (``weights_only=True``, one load per file
per process).
"""

from __future__ import annotations

import math
from typing import Any

from pytest_mlgates.checkpoint_io import resume_kinds
from pytest_mlgates.errors import GateFailure
from pytest_mlgates.formats._mutations import (
    Mutation,
    Mutations,
    drop_state,
    remove,
    truncate,
)
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import fmt
from pytest_mlgates.rundir import Run, best_index
from pytest_mlgates.runvalues import numbers_close

# --------------------------------------------------------------------------- best_checkpoints


def _tracked(run: Run, params: dict[str, Any]) -> list[tuple[str, str]]:
    from pytest_mlgates.rundir import default_mode

    given = params.get("metrics")
    if given is None:
        tracked = run.tracked
        if not tracked:
            if run.format != "engine":
                where = {"lightning": "no ModelCheckpoint callback with a monitor",
                         "huggingface": "no best_model_checkpoint (metric_for_best_model) in trainer_state.json",
                         "plain": "no tracked: in the gate file's run: section",
                         "keras": "no tracked: in the gate file's run: section (a .keras file names no monitor)",
                         "ultralytics": "no fitness column (metrics/accuracy_top1, metrics/mAP50-95(B)) in results.csv",
                         "dvclive": "no tracked: in the gate file's run: section (DVCLive keeps no checkpoints)",
                         "wandb": "no tracked: in the gate file's run: section (W&B keeps no checkpoints locally)",
                         }.get(run.format, "no checkpoints/best_<metric>.pt")
                raise GateFailure(f"{run.shown(run.path)}: a {run.format} run with {where}, so no tracked "
                                  "metrics; give metrics: explicitly")
            raise GateFailure(f"{run.shown(run.path / 'config.yaml')}: no checkpoint.tracked metrics "
                              "(and training_results.json names none); give metrics: explicitly")
        return tracked
    out = []
    for item in ([given] if isinstance(given, str) else given):
        if isinstance(item, dict):
            out.append((item["metric"], item.get("mode") or default_mode(item["metric"])))
        else:
            out.append((str(item), default_mode(str(item))))
    return out


def _tie_note(log: Any, column: str, epoch: int | None, best_value: float) -> str:
    """Where the file's own epoch ties the best value: every trainer keeps the first epoch
    of a tie, so the note says which was kept (a log of epochs only)."""
    if epoch is None or log.sparse:
        return ""
    import numpy as np

    at = np.flatnonzero(log.labels == epoch)
    if at.size and numbers_close(float(log.array(column)[at[0]]), best_value, 1e-9):
        return f" (epoch {epoch} ties at {fmt(best_value)}; the first epoch at the best value is kept)"
    return ""


def _mutated_tracked(m: Mutations, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(column, mode) of each metric ``metrics:`` names (the gate file's names mapped to the
    run's columns), else the run's tracked metrics."""
    from pytest_mlgates.rundir import default_mode

    given = params.get("metrics")
    if given:
        out = []
        for entry in [given] if isinstance(given, (str, dict)) else given:
            if isinstance(entry, dict):
                metric = str(entry.get("metric"))
                out.append((m.real(metric), str(entry.get("mode") or default_mode(metric))))
            else:
                out.append((m.real(str(entry)), default_mode(str(entry))))
        return out
    return list(m.run.tracked)


def best_checkpoints_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    tracked = _mutated_tracked(m, params)
    if not tracked:
        return [], "no mutation: the run tracks no metric with a best checkpoint"
    for metric, mode in tracked:
        record = m.run.best_checkpoint(metric, mode)
        rel = m.rel(record.path) if record.path is not None else None
        if rel is not None:
            return [Mutation(f"remove:{rel}", f"{rel} deleted (the best checkpoint of {metric})", remove(rel)),
                    Mutation(f"truncate:{rel}", f"{rel} truncated to half",
                             truncate(rel, lambda size: size // 2))], ""
    return [], f"no mutation: no best checkpoint of {tracked[0][0]} found in the run to delete"


@p.gate(doc="one best_<metric>.pt per tracked metric, holding the log's best epoch and value",
        params={"metrics": p.Param(p.tracked)}, mutations=best_checkpoints_mutations)
def best_checkpoints(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    """Each tracked metric has a best checkpoint, at the epoch and value where the log has
    that metric's best.  Where the best checkpoint is, and what it records, is the run
    format's business (``Run.best_checkpoint``): best_<metric>.pt for the engine, the
    ModelCheckpoint callbacks of a Lightning run, best_model_checkpoint of the HF Trainer."""
    tracked = _tracked(run, params)
    log = run.log
    src = run.shown(log.source)
    problems: list[str] = []
    found: list[str] = []
    unread: list[str] = []
    for metric, mode in tracked:
        column = ctx.metric_aliases.get(metric, metric)
        if column not in log.columns and metric in log.columns:
            column = metric
        if column not in log.columns:
            problems.append(f"{src}: tracked metric '{column}' is not a logged column, so no best checkpoint of it can be right")
            continue
        record = run.best_checkpoint(column, mode)
        if record.problem:
            problems.append(record.problem)
            continue
        shown = record.shown
        index = best_index(log.array(column), mode)
        if index is None:
            problems.append(f"{src}: {column} has no finite value, yet {shown} exists")
            continue
        best_value = float(log.array(column)[index])
        best_epoch: int | None
        if record.unread:  # there, but what it holds cannot be read safely: say so
            unread.append(f"{shown.rsplit('/', 1)[-1]} exists (the best {column} is {fmt(best_value)} "
                          f"{log.where(index)}); its epoch and value are not checked: {record.unread}")
            continue
        if log.sparse and record.step is not None:  # a log of steps places the file by its step
            best_step = int(log.labels[index])
            if record.step != best_step:
                problems.append(f"{shown}: step = {record.step}; needs {best_step}, the best {column} "
                                f"({mode}) step in {src}")
                continue
            best_epoch = best_step
        else:
            best_epoch = int(log.labels[index]) if not log.sparse else _epoch_of_row(log, index)
            if best_epoch is not None and record.epoch != best_epoch:
                problems.append(f"{shown}: epoch = {record.epoch}; needs {best_epoch}, the best {column} "
                                f"({mode}) epoch in {src}{_tie_note(log, column, record.epoch, best_value)}")
                continue
        if record.value is None or not numbers_close(record.value, best_value, 1e-6 if run.format != "engine" else 1e-9):
            got_value = fmt(record.value) if record.value is not None else "not recorded"
            what = "monitor.value" if run.format == "engine" else f"best {column}"
            problems.append(f"{shown}: {what} = {got_value}; "
                            f"needs {fmt(best_value)}, the best {column} in {src} (epoch {best_epoch})")
            continue
        found.append(shown.rsplit("/", 1)[-1])
    threshold = "one matching best checkpoint per tracked metric"
    if problems:  # every one of them: a user should not have to rerun to learn the next
        return GateResult(False, f"{len(problems)} of {len(tracked)} wrong", threshold, "; ".join(problems))
    parts = [f"{', '.join(found)}: each holds the best epoch and value of its metric in {src}"] if found else []
    return GateResult(True, f"{len(tracked)} files", threshold, "; ".join(parts + unread))


# --------------------------------------------------------------------------- resume_point


def _resume_red(run: Run, shown: str, epoch: Any, needed: list[str], missing: list[str],
                threshold: str) -> tuple[GateResult | None, int]:
    """(a RED result or None, the last logged epoch): state missing, or not at that epoch."""
    if missing:
        return GateResult(False, f"no {missing[0]}", threshold,
                          f"{shown}: no {', '.join(missing)} state; needs {', '.join(needed)} to resume"), -1
    log = run.log
    if len(log) == 0:
        raise GateFailure(f"{run.shown(log.source)}: no rows (header only)")
    found = int(log.labels[-1]) if not log.sparse else _epoch_of_row(log, len(log) - 1)
    if found is None:  # a log of steps without epochs: nothing to place the file by
        return None, epoch if isinstance(epoch, int) else -1
    last_epoch = found
    if epoch != last_epoch:
        hint = run.resume_hint(epoch, last_epoch)
        return GateResult(False, f"epoch {epoch}", f"epoch {last_epoch}",
                          f"{shown}: epoch = {epoch}; needs {last_epoch}, the last epoch in {run.shown(log.source)}"
                          + (f" ({hint})" if hint else "")), last_epoch
    return None, last_epoch


def _epoch_of_row(log: Any, row: int) -> int | None:
    """The epoch of a row of a log of steps (its last logged epoch, a fraction counting as
    the epoch it completes), None when the log has no epochs."""
    if "epoch" not in log:
        return None
    import numpy as np

    epochs = log.array("epoch")[: row + 1]
    epochs = epochs[np.isfinite(epochs)]
    if not epochs.size:
        return None
    value = float(epochs[-1])
    return int(value) if value == int(value) else math.ceil(value - 1e-9)


def _foreign_resume_point(run: Run) -> GateResult:
    """Another trainer's resume point, found by the run format (``Run.resume_state``)."""
    shown, epoch, held, missing = run.resume_state()
    threshold = "model and optimizer state at the last logged epoch"
    red, last_epoch = _resume_red(run, shown, epoch, held + missing, missing, threshold)
    if red is not None:
        return red
    note = "" if "rng" in held else f" (no RNG state: {run.format} does not save it, so a resume is not bit-exact)"
    return GateResult(True, f"epoch {last_epoch}", threshold,
                      f"{shown}: epoch {last_epoch} with {', '.join(held)} state{note}")


def _history_rows(history: Any) -> int | None:
    """How many log rows a checkpoint's ``history`` holds: a list of rows
    (model-checkpoint/1) or ``{"columns", "rows": (epochs, columns) tensor}`` (/2)."""
    if isinstance(history, list):
        return len(history)
    shape = getattr(history.get("rows"), "shape", None) if isinstance(history, dict) else None
    if shape is not None and len(shape) == 2 and isinstance(history.get("columns"), list) \
            and shape[1] == len(history["columns"]):
        return int(shape[0])
    return None


def resume_point_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    path = params.get("path")
    if path in (None, "checkpoints/last.pt") and m.run.format != "engine":
        rel = m.rel(m.run.resume_path())
    else:
        rel = str(path or "checkpoints/last.pt")
    if rel is None:
        return [], "no mutation: the resume point lies outside the run dir"
    tiers = [Mutation(f"drop_optimizer:{rel}", f"optimizer state removed from {rel}", drop_state(rel, "optimizer"))]
    if not (m.root / rel).is_dir():
        tiers.append(Mutation(f"truncate:{rel}", f"{rel} truncated to half", truncate(rel, lambda size: size // 2)))
    tiers.append(Mutation(f"remove:{rel}", f"{rel} deleted", remove(rel)))
    return tiers, ""


@p.gate(doc="checkpoints/last.pt can resume the run: full state, at the last logged epoch",
        params={"path": p.Param(p.string, "checkpoints/last.pt")}, mutations=resume_point_mutations)
def resume_point(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    if run.format != "engine" and params["path"] == "checkpoints/last.pt":  # the default: ask the format
        return _foreign_resume_point(run)
    rel = params["path"]
    shown = run.shown(run.path / rel)
    threshold = "full state at the last logged epoch"
    if not run.resolve(rel).exists():
        return GateResult(False, "missing", threshold, f"{shown}: not found; needs a resume point")
    ckpt = run.checkpoint(rel)
    needed = ["model", "optimizer", "scheduler", "rng"]
    held = resume_kinds(ckpt, shown)  # model / model_state_dict / state_dict, optimizer_state_dict ...
    red, last_epoch = _resume_red(run, shown, run.log_epoch_of(ckpt), needed,
                                  [k for k in needed if k not in held], threshold)
    if red is not None:
        return red
    log = run.log
    history = ckpt.get("history")
    rows = _history_rows(history)
    if history is not None and rows != len(log):
        n = rows if rows is not None else type(history).__name__
        return GateResult(False, f"{n} rows", f"{len(log)} rows",
                          f"{shown}: history has {n} rows; needs {len(log)}, the rows of {run.shown(log.source)}")
    return GateResult(True, f"epoch {last_epoch}", threshold,
                      f"{shown}: epoch {last_epoch} with model, optimizer, scheduler and rng state; history matches the log")


__all__ = ["best_checkpoints", "resume_point"]
