"""Gates that rebuild a checkpoint's model and run it: checkpoint_softmax, reproduces.

A checkpoint holds weights, not code: the model comes from the user's ``mlgates_subject``
fixture or from the gate file (``model: "pkg.mod:Class"``), both code under test and
reviewed like a test (``pytest_mlgates.models``) -- the checkpoint itself never names code.
:func:`checkpoint_model` is that one way to a model (the shortcut gate and
``class_recall``'s recounts use it too); :func:`checkpoint_name` is the checkpoint
``checkpoint_softmax`` opens, for its mutations and the formats' own.  torch is imported
inside the gates, never when the module loads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytest_mlgates.checkpoint_io import checkpoint_monitors
from pytest_mlgates.errors import GateFailure, MlgatesError
from pytest_mlgates.formats._mutations import Mutation, Mutations, nan_weights, truncate
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import as_list, engine_only, fmt, fmt_threshold
from pytest_mlgates.rundir import Run


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- models


def _aliased(run: Run, name: str, ctx: GateContext) -> str:
    """``best_val_loss`` -> ``best_eval_loss`` when the gate file maps val_loss to eval_loss
    and this run logged eval_loss (not val_loss)."""
    if not name.startswith("best_") or "." in name or "/" in name:
        return name
    metric = name[len("best_"):]
    real = ctx.metric_aliases.get(metric)
    if real and real != metric:
        try:
            columns = run.log.columns
        except MlgatesError:
            return name
        if real in columns and metric not in columns:
            return f"best_{real}"
    return name


def _no_model(shown: str) -> GateFailure:
    return GateFailure(f"{shown}: a checkpoint holds weights, not the model: name its class and an input in "
                       "the gate file (model: 'pkg.module:Class', input_shape: [batch, ...]) or define the "
                       "mlgates_subject fixture (docs/preflight.md)")


def checkpoint_model(run: Run, ckpt: dict[str, Any], params: dict[str, Any], ctx: GateContext,
                     shown: str) -> tuple[Any, Any]:
    """(model with the checkpoint's weights, the subject or None).

    The ``mlgates_subject`` fixture first: it is the code that trained this run (the
    bundled engine's fixture gives a subject for its own runs only).  Else the class the
    gate file names (``model:``), which is how one gate file also judges the runs of
    trainers no subject describes."""
    from pytest_mlgates.models import is_import_target, model_from_subject, shared_model_from_target

    target = params.get("model")
    if target and not is_import_target(str(target)):
        raise GateFailure(f"model {target!r}: expected 'package.module:ClassName'")
    subject = ctx.subject()
    if subject is not None:
        return model_from_subject(subject, ckpt, shown), subject
    if target:
        return shared_model_from_target(ckpt, params, shown), None
    raise _no_model(shown)


# --------------------------------------------------------------------------- checkpoint_softmax


def checkpoint_name(m: Mutations, params: dict[str, Any]) -> str:
    """The checkpoint ``checkpoint_softmax`` opens on the run ``m`` mutates (``checkpoint:``,
    else the run's default; a ``metrics:`` map applied), for its mutations and the formats'."""
    name = params.get("checkpoint") or m.run.default_checkpoint()
    return _aliased(m.run, str(name), GateContext(rootdir=Path("."), metric_aliases=m.aliases))


def checkpoint_softmax_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    name = checkpoint_name(m, params)
    rel = m.rel(m.run.checkpoint_path(name))
    if rel is None:
        return [], f"no mutation: checkpoint {name} lies outside the run dir"
    tiers = [Mutation(f"nan_weights:{rel}", f"model weights of {rel} set to NaN", nan_weights([rel]))]
    if not (m.root / rel).is_dir():
        tiers.append(Mutation(f"truncate:{rel}", f"{rel} truncated to half", truncate(rel, lambda size: size // 2)))
    return tiers, ""


@p.gate(doc="a checkpoint loads into its model and gives a valid softmax",
        params={"checkpoint": p.Param(p.string), "model": p.Param(p.target), "kwargs": p.Param(p.mapping),
                "input_shape": p.Param(p.ints), "prefix": p.Param(p.string), "samples": p.Param(p.pos_int, 16)},
        mutations=checkpoint_softmax_mutations)
def checkpoint_softmax(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    from pytest_mlgates.errors import require_extra
    from pytest_mlgates.models import first_samples, forward, to_device_of

    torch = require_extra("torch", "gate checkpoint_softmax")
    name = _aliased(run, params.get("checkpoint") or run.default_checkpoint(), ctx)
    shown = run.checkpoint_shown(name)
    ckpt = run.checkpoint(name)
    n = int(params.get("samples") or 16)
    model, subject = checkpoint_model(run, ckpt, params, ctx, shown)
    shape = params.get("input_shape")
    num_classes = None
    if subject is not None:  # the subject's model: its real samples (input_shape is the model: class's)
        inputs: Any
        inputs, _, source = first_samples(subject, "val", n)
        num_classes = subject.num_classes
    elif shape:
        inputs = torch.randn(*[int(d) for d in shape], generator=torch.Generator().manual_seed(0))
        source = "random inputs"
    else:
        raise GateFailure(f"gate checkpoint_softmax: model {params['model']!r} needs input_shape: [batch, ...] "
                          "(or a mlgates_subject fixture whose loaders give real samples)")
    try:
        with torch.no_grad():
            logits = forward(model, to_device_of(inputs, model))
    except Exception as exc:  # noqa: BLE001 - the model is code under test
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise GateFailure(f"{shown}: forward pass failed on {source} ({exc.__class__.__name__}: {first})") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise GateFailure(f"{shown}: model output is not a (batch, classes) tensor")
    if num_classes and logits.shape[1] != num_classes:
        return GateResult(False, f"{logits.shape[1]} outputs", f"{num_classes} classes",
                          f"{shown}: {logits.shape[1]} outputs; needs {num_classes}, one per class")
    probs = torch.softmax(logits.double(), dim=1)
    threshold = "finite, in [0, 1], rows sum to 1 (atol 1e-4)"
    bad_rows = int((~torch.isfinite(probs)).any(dim=1).sum())
    if bad_rows:
        return GateResult(False, f"nan in {bad_rows} rows", threshold,
                          f"softmax of {shown} = nan in {bad_rows} of {len(probs)} rows on {source}; needs finite probabilities")
    worst = float((probs.sum(dim=1) - 1).abs().max())
    if worst > 1e-4 or float(probs.min()) < 0 or float(probs.max()) > 1:
        return GateResult(False, f"row sum off by {worst:.2g}", threshold,
                          f"softmax of {shown}: row sums off by {worst:.2g} on {source}; needs {threshold}")
    return GateResult(True, f"{len(probs)} rows", threshold,
                      f"{shown}: loads and gives a valid softmax over {probs.shape[1]} classes on {source}")


# --------------------------------------------------------------------------- reproduces


def _reproduce_targets(run: Run, params: dict[str, Any]) -> list[tuple[str, list[str], int | None]]:
    """(checkpoint name, metrics it must reproduce, its epoch in the log's numbering)."""
    names = as_list(params["checkpoint"])
    out: list[tuple[str, list[str], int | None]] = []
    if names is None:
        problems = []
        for metric, mode in run.tracked:
            record = run.best_checkpoint(metric, mode)
            if record.problem is None:
                out.append((f"best_{metric}", [metric], record.epoch))
            else:
                problems.append(record.problem)
        if not out:
            why = f" ({problems[0]})" if problems else " (no tracked metrics)"
            raise GateFailure(f"{run.shown(run.path)}: no best checkpoint of a tracked metric to re-evaluate{why}")
        return out
    for name in names:
        ckpt = run.checkpoint(name)
        epoch = ckpt.get("epoch")
        metrics = list(checkpoint_monitors(ckpt)) or [f"{params['split']}_loss", f"{params['split']}_accuracy"]
        out.append((name, metrics, epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None))
    return out


@p.gate(doc="re-evaluating a best checkpoint reproduces the logged value of its metric",
        params={"checkpoint": p.Param(p.strings), "tolerance": p.Param(p.nonneg, 1e-4),
                "split": p.Param(p.string, "val")},
        mutations=engine_only("reproduces"))
def reproduces(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    """Each best checkpoint, re-evaluated by the subject's ``evaluate`` (one real validation
    pass), gives the value of its metric that the log holds at its epoch."""
    tol = float(params["tolerance"])
    subject = ctx.subject()
    if subject is None or subject.evaluate is None:
        raise GateFailure(f"{run.shown(run.path)}: gate reproduces needs the mlgates_subject fixture with "
                          "evaluate=fn(model) -> the dict one validation pass logs, to re-evaluate the checkpoints "
                          "(docs/preflight.md)")
    if params["split"] != "val":
        raise GateFailure(f"gate reproduces: split {params['split']!r}: {subject.name}.evaluate runs the "
                          "validation pass; re-evaluating another split is not supported")
    log = run.log
    worst: tuple[float, str] | None = None
    checked = 0
    targets = _reproduce_targets(run, params)
    for name, metrics, epoch in targets:
        shown = run.checkpoint_shown(name)
        ckpt = run.checkpoint(name)
        model, _ = checkpoint_model(run, ckpt, {}, ctx, shown)
        try:
            got = dict(subject.evaluate(model))
        except Exception as exc:  # noqa: BLE001 - user code
            raise GateFailure(f"{subject.name}.evaluate on {shown}: {exc.__class__.__name__}: "
                              f"{str(exc).strip()[:200]}") from None
        monitors = checkpoint_monitors(ckpt)
        for metric in metrics:
            logged: float | None = None
            where = ""
            if metric in log.columns and epoch is not None and not log.sparse and float(epoch) in log.epochs:
                logged = log.columns[metric][log.epochs.index(float(epoch))]
                where = f"{run.shown(log.source)} epoch {epoch}"
            elif metric in monitors:
                logged = _as_float(monitors[metric].get("value"))
                where = f"{shown} monitor.value"
            elif isinstance(ckpt.get("metrics"), dict) and metric in ckpt["metrics"]:
                logged = _as_float(ckpt["metrics"][metric])
                where = f"{shown} metrics"
            value = _as_float(got.get(metric))
            if logged is None:
                raise GateFailure(f"{shown}: no logged value of {metric} to compare with")
            if value is None:
                keys = ", ".join(list(got)[:10])
                raise GateFailure(f"{subject.name}.evaluate returns no '{metric}' (it returns {keys}); "
                                  f"cannot re-evaluate {shown}")
            diff = abs(value - logged) if not (math.isnan(value) and math.isnan(logged)) else 0.0
            if math.isnan(diff):
                diff = math.inf
            checked += 1
            line = (f"{metric} re-evaluated from {shown} = {fmt(value)}, logged {fmt(logged)} ({where}); "
                    f"needs |difference| <= {fmt_threshold(tol)}")
            if worst is None or diff > worst[0]:
                worst = (diff, line)
    assert worst is not None
    value_text = f"{worst[0]:.2g}"
    threshold = f"<= {fmt_threshold(tol)}"
    if worst[0] > tol:
        return GateResult(False, value_text, threshold, worst[1])
    return GateResult(True, value_text, threshold,
                      f"{checked} logged values reproduced from {len(targets)} checkpoints within "
                      f"{fmt_threshold(tol)} (largest difference {value_text})")


__all__ = ["checkpoint_model", "checkpoint_name", "checkpoint_softmax", "reproduces"]
