"""Gates that open checkpoints: best_checkpoints, resume_point, checkpoint_softmax, reproduces.

Checkpoints are opened through ``Run.checkpoint`` (``weights_only=True``, one load per file
per process). Models are rebuilt with the engine's ``model.nets.model_from_checkpoint``;
for a model the engine did not build, the gate file names its class (``model:``), which
is code under test and reviewed like a test -- the checkpoint itself never names code.
"""

from __future__ import annotations

import importlib
import json
import math
from typing import Any

from pytest_mlgates.errors import GateFailure, MlgatesError, RunDirError
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates._common import as_list, fmt, fmt_threshold
from pytest_mlgates.rundir import (
    Run,
    best_index,
    checkpoint_monitors,
    numbers_close,
    resume_kinds,
    state_dict_of,
)


def _gist(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line, shortened (load_state_dict writes several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = text or exc.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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
        index = best_index(log.columns[column], mode)
        if index is None:
            problems.append(f"{src}: {column} has no finite value, yet {shown} exists")
            continue
        best_epoch = int(log.epochs[index])
        best_value = log.columns[column][index]
        if record.epoch != best_epoch:
            problems.append(f"{shown}: epoch = {record.epoch}; needs {best_epoch}, the best {column} "
                            f"({mode}) epoch in {src}")
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
    names = ", ".join(found)
    return GateResult(True, f"{len(tracked)} files", threshold,
                      f"{names}: each holds the best epoch and value of its metric in {src}")


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
    last_epoch = int(log.epochs[-1])
    if epoch != last_epoch:
        return GateResult(False, f"epoch {epoch}", f"epoch {last_epoch}",
                          f"{shown}: epoch = {epoch}; needs {last_epoch}, the last epoch in {run.shown(log.source)}"), last_epoch
    return None, last_epoch


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


# --------------------------------------------------------------------------- models and data

_DATASETS: dict[str, Any] = {}


def _config_of(run: Run, ckpt: dict[str, Any], shown: str) -> Any:
    from model.config import ConfigError, build_config

    tree = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else run.config
    if tree is None:
        raise GateFailure(f"{shown}: no config in the checkpoint and no config.yaml in the run dir")
    try:
        return build_config(tree, shown)
    except ConfigError as exc:
        raise GateFailure(str(exc)) from None


def rebuild_dataset(run: Run, config: Any, ckpt: dict[str, Any] | None = None) -> Any:
    """The engine's dataset for ``config``, with the run's ``splits.json`` indices and the
    checkpoint's normalization (what the model saw). Cached per config within a process."""
    import numpy as np

    from model.config import ConfigError
    from model.data import build_dataset

    key = json.dumps(config.to_dict()["data"], sort_keys=True) + f"|{config.seed}"
    base = _DATASETS.get(key)
    if base is None:
        try:
            base = build_dataset(config)
        except ConfigError as exc:
            raise GateFailure(str(exc)) from None
        _DATASETS[key] = base
    import dataclasses

    dataset = dataclasses.replace(base, splits=dict(base.splits))
    splits = run.splits
    if splits is not None:
        shown = run.shown(run.path / "splits.json")
        for name in ("train", "val", "test"):
            ids = splits.get(name)
            if ids is None:
                continue
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise RunDirError(f"{shown}: '{name}' is not a list of integer indices")
            if ids and (min(ids) < 0 or max(ids) >= len(base.y)):
                raise RunDirError(f"{shown}: '{name}' has an index outside the dataset (0..{len(base.y) - 1})")
            dataset.splits[name] = np.asarray(ids, dtype=np.int64)
    norm = (ckpt or {}).get("normalization")
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        dataset = dataclasses.replace(dataset, normalization={"mean": list(norm["mean"]), "std": list(norm["std"])})
    return dataset


def engine_model(ckpt: dict[str, Any], shown: str, *, use_ema: bool = True) -> Any:
    """The engine's model with the weights it was evaluated with (EMA when there is one)."""
    from model.config import ConfigError
    from model.nets import model_from_checkpoint

    try:
        model = model_from_checkpoint(ckpt)
        if use_ema and isinstance(ckpt.get("ema"), dict):
            model.load_state_dict(ckpt["ema"])
    except ConfigError as exc:
        raise GateFailure(f"{shown}: {exc}") from None
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GateFailure(f"{shown}: weights do not fit the model ({_gist(exc)})") from None
    model.eval()
    return model


def _is_import_target(module_name: str, class_name: str) -> bool:
    """``package.module`` and ``ClassName`` are dotted identifiers: no relative or path-like names."""
    parts = module_name.split(".")
    return bool(module_name) and all(p.isidentifier() for p in parts) and class_name.isidentifier()


def foreign_model(ckpt: dict[str, Any], params: dict[str, Any], shown: str) -> Any:
    """A model class named in the gate file, loaded with the checkpoint's state dict."""
    target = params["model"]
    module_name, _, class_name = str(target).partition(":")
    if not _is_import_target(module_name, class_name):
        raise GateFailure(f"model {target!r}: expected 'package.module:ClassName'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:  # noqa: BLE001 - importing the code under test may raise anything
        raise GateFailure(f"model {target!r}: cannot import ({exc.__class__.__name__}: {_gist(exc)})") from None
    try:
        model = cls(**(params.get("kwargs") or {}))
    except Exception as exc:  # noqa: BLE001 - user code under test
        raise GateFailure(f"model {target!r}: constructor failed ({exc.__class__.__name__}: {exc})") from None
    try:
        state = state_dict_of(ckpt, shown)
    except RunDirError as exc:
        raise GateFailure(str(exc)) from None
    prefix = params.get("prefix")
    if prefix is None and state and all(str(k).startswith("model.") for k in state):
        prefix = "model."
    if prefix:
        state = {(k[len(prefix):] if str(k).startswith(prefix) else k): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise GateFailure(f"{shown}: weights do not fit {target} ({_gist(exc)})") from None
    model.eval()
    return model


def _is_engine_checkpoint(ckpt: dict[str, Any]) -> bool:
    """A checkpoint the engine wrote rebuilds its own model from its config, so one gate file
    with ``model:`` (for other trainers' runs) also checks the engine's runs."""
    config = ckpt.get("config")
    return isinstance(config, dict) and isinstance(config.get("model"), dict) and isinstance(ckpt.get("model"), dict)


def _logits(output: Any) -> Any:
    """The logits of a forward pass: a tensor, ``.logits`` (a Hugging Face ModelOutput),
    ``["logits"]`` of a dict, or the first element of a tuple."""
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


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


def _default_checkpoint(run: Run) -> str:
    return run.default_checkpoint()


# --------------------------------------------------------------------------- checkpoint_softmax


def checkpoint_softmax(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    import torch

    name = _aliased(run, params.get("checkpoint") or _default_checkpoint(run), ctx)
    shown = run.checkpoint_shown(name)
    ckpt = run.checkpoint(name)
    n = int(params.get("samples") or 16)
    source = "random inputs"
    inputs: Any = None
    target = params.get("model")
    if target and not _is_import_target(*str(target).partition(":")[::2]):
        raise GateFailure(f"model {target!r}: expected 'package.module:ClassName'")
    if target and not (run.format == "engine" and _is_engine_checkpoint(ckpt)):
        model = foreign_model(ckpt, params, shown)
        shape = params.get("input_shape")
        if not shape:
            raise GateFailure(f"gate checkpoint_softmax: model {params['model']!r} needs input_shape: [batch, ...]")
        inputs = torch.randn(*[int(d) for d in shape], generator=torch.Generator().manual_seed(0))
        num_classes = None
    elif run.format != "engine":
        raise GateFailure(f"{shown}: a {run.format} checkpoint holds weights, not the model: name its class and "
                          "an input in the gate file (model: 'pkg.module:Class', input_shape: [batch, ...])")
    else:
        model = engine_model(ckpt, shown)
        num_classes = len(ckpt.get("class_names") or [])
        try:
            config = _config_of(run, ckpt, shown)
            dataset = rebuild_dataset(run, config, ckpt)
            idx = dataset.splits["val"][:n]
            if len(idx):
                inputs = torch.from_numpy(dataset.normalized("val")[:n].copy())
                source = f"{len(idx)} val samples"
        except MlgatesError:
            inputs = None
        if inputs is None:
            shape = params.get("input_shape") or [n, *[int(d) for d in ckpt.get("input_shape", [])]]
            inputs = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            logits = _logits(model(inputs.float()))
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


def reevaluate(run: Run, ckpt: dict[str, Any], shown: str, split: str) -> dict[str, float]:
    """Loss and metrics of the checkpoint's weights on ``split``, computed as the engine does
    (class-weighted cross-entropy over the whole split, ``classification_metrics``)."""
    import torch

    from model.config import ConfigError
    from model.metrics import classification_metrics
    from model.train import compute_class_weights

    config = _config_of(run, ckpt, shown)
    dataset = rebuild_dataset(run, config, ckpt)
    if split not in dataset.splits:
        raise GateFailure(f"gate reproduces: unknown split {split!r}")
    model = engine_model(ckpt, shown)
    try:
        weights = compute_class_weights(config.train.class_weights, dataset)
    except ConfigError as exc:
        raise GateFailure(str(exc)) from None
    x = torch.from_numpy(dataset.normalized(split).copy()).float()
    y = torch.from_numpy(dataset.y[dataset.splits[split]].astype("int64"))
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)]) if len(x) else torch.zeros(0, 2)
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    loss = float(torch.nn.functional.cross_entropy(logits.float(), y, weight=weight)) if len(x) else math.nan
    names = list(ckpt.get("class_names") or dataset.class_names)
    return {f"{split}_loss": loss, **classification_metrics(logits, y, names, split)}


def reproduces(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    tol = float(params["tolerance"])
    split = params["split"]
    names = as_list(params["checkpoint"])
    if names is None:
        names = [f"best_{m}" for m, _ in run.tracked if (run.path / "checkpoints" / f"best_{m}.pt").exists()]
        if not names:
            raise GateFailure(f"{run.shown(run.path / 'checkpoints')}: no best_<metric>.pt of a tracked metric to re-evaluate")
    log = run.log
    worst: tuple[float, str] | None = None
    checked = 0
    for name in names:
        path = run.checkpoint_path(name)
        shown = run.shown(run.path / path.relative_to(run.path.resolve())) if path.is_relative_to(run.path.resolve()) else str(path)
        ckpt = run.checkpoint(name)
        monitors = checkpoint_monitors(ckpt)  # every metric it was the best for
        metrics = list(monitors) or [f"{split}_loss", f"{split}_accuracy"]
        got = reevaluate(run, ckpt, shown, split)
        epoch = ckpt.get("epoch")
        for metric in metrics:
            logged: float | None = None
            where = ""
            if metric in log.columns and isinstance(epoch, int) and float(epoch) in log.epochs:
                logged = log.columns[metric][log.epochs.index(float(epoch))]
                where = f"{run.shown(log.source)} epoch {epoch}"
            elif metric in monitors:
                logged = _as_float(monitors[metric].get("value"))
                where = f"{shown} monitor.value"
            elif isinstance(ckpt.get("metrics"), dict) and metric in ckpt["metrics"]:
                logged = _as_float(ckpt["metrics"][metric])
                where = f"{shown} metrics"
            if logged is None or metric not in got:
                raise GateFailure(f"{shown}: no logged value of {metric} to compare with")
            diff = abs(got[metric] - logged) if not (math.isnan(got[metric]) and math.isnan(logged)) else 0.0
            if math.isnan(diff):
                diff = math.inf
            checked += 1
            line = (f"{metric} re-evaluated from {shown} = {fmt(got[metric])}, logged {fmt(logged)} ({where}); "
                    f"needs |difference| <= {fmt_threshold(tol)}")
            if worst is None or diff > worst[0]:
                worst = (diff, line)
    assert worst is not None
    value = f"{worst[0]:.2g}"
    threshold = f"<= {fmt_threshold(tol)}"
    if worst[0] > tol:
        return GateResult(False, value, threshold, worst[1])
    return GateResult(True, value, threshold,
                      f"{checked} logged values reproduced from {len(names)} checkpoints within {fmt_threshold(tol)} "
                      f"(largest difference {value})")
