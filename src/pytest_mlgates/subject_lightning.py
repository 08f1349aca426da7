"""The preflight subject of a LightningModule: ``PreflightSubject.from_lightning``.

Imported by that classmethod only (it imports Lightning).  :func:`lightning_fields` makes
each field the user did not pass from the module, its datamodule and its trainer -- see its
docstring; ``pytest_mlgates.lightning``'s callback finds its run dir here too
(:func:`run_dir_of`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import SubjectError

try:
    import lightning.pytorch as pl
except ImportError:  # the package's older name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        raise ImportError("PreflightSubject.from_lightning needs PyTorch Lightning: pip install lightning") from None

__all__ = ["lightning_classes", "lightning_fields", "run_dir_of", "train_epoch"]

#: Lightning's own notes about a module used outside ``fit`` (``self.log`` with no trainer
#: or logger, few DataLoader workers): noise in a preflight check.
_NOISE = (".*self.log\\(.*", ".*does not have many workers.*", ".*no logger configured.*",
          ".*`training_step` returned `None`.*", ".*but have no `val_dataloader`.*")


def lightning_classes(name: str) -> tuple[Any, ...]:
    """Lightning's class ``name`` from each Lightning package already imported (both
    ``lightning.pytorch`` and ``pytorch_lightning`` may be in use)."""
    found = []
    for package in ("lightning.pytorch", "pytorch_lightning"):
        if package not in sys.modules:
            continue
        for sub in ("callbacks", "loggers"):
            module = sys.modules.get(f"{package}.{sub}")
            cls = getattr(module, name, None) if module is not None else None
            if isinstance(cls, type):
                found.append(cls)
    return tuple(found)


def run_dir_of(trainer: Any) -> Path:
    """The run dir the gates read: the CSVLogger's version dir, else ``trainer.log_dir``."""
    csv_loggers = lightning_classes("CSVLogger")
    for logger in getattr(trainer, "loggers", []) or []:
        if csv_loggers and isinstance(logger, csv_loggers):
            return Path(logger.log_dir)
    return Path(trainer.log_dir or trainer.default_root_dir)


def lightning_fields(module: Any, datamodule: Any, trainer: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``PreflightSubject.from_lightning(module, datamodule, trainer, **overrides)``.

    What each field is made of (any keyword argument replaces the field of that name)::

        model        a factory: type(module)(**module.hparams) -- fresh weights per call -- when
                     save_hyperparameters() recorded every argument; else a copy of the
                     module as given (refused once it has trained: pass model=)
        loaders      {"train", "val"}: the datamodule's (after prepare_data/setup("fit")),
                     else trainer.datamodule's, else the module's own *_dataloader() hooks
        loss         the module's loss: a torch loss module it holds, or an attribute
                     loss_fn / criterion / loss_func / loss_function / loss (else pass loss=)
        num_classes  module.num_classes or hparams num_classes / n_classes / num_labels,
                     the datamodule's num_classes, or the width of forward(example_input_array)
        monitors     the monitor of every ModelCheckpoint / EarlyStopping of ``trainer``
        accumulate   trainer.accumulate_grad_batches (1 without a trainer)
        evaluate     one real validation pass: trainer.validate on a fresh Trainer(logger=False,
                     enable_checkpointing=False), returning trainer.callback_metrics -- the names
                     a monitor can match (names logged only in training_step are added, from
                     one training batch at learning rate 0 on a copy, when a monitor is missing)
        train_epoch  the module's training_step on the given optimizer: Lightning's automatic
                     optimization (loss / accumulate, a step every accumulate batches), or, for
                     manual optimization, the module's own stepping (self.optimizers() is
                     the given optimizer)

    Where a field cannot be found, a one-line :class:`~pytest_mlgates.SubjectError` names
    the keyword to pass.
    """
    if not isinstance(module, pl.LightningModule):
        raise SubjectError(f"from_lightning: module needs a LightningModule; got {type(module).__name__}")
    if trainer is not None and not isinstance(trainer, pl.Trainer):
        raise SubjectError(f"from_lightning: trainer needs a lightning Trainer or None; got {type(trainer).__name__}")
    fields: dict[str, Any] = dict(overrides)
    if "model" not in fields:
        fields["model"] = _model_factory(module, trainer)
    if "loaders" not in fields:
        fields["loaders"] = _loaders(module, datamodule if datamodule is not None else _datamodule_of(trainer))
    if "loss" not in fields:
        fields["loss"] = _find_loss(module)
    if "num_classes" not in fields:
        fields["num_classes"] = _num_classes(module, datamodule)
    if "monitors" not in fields:
        fields["monitors"] = _monitors(trainer)
    if "accumulate" not in fields:
        fields["accumulate"] = int(getattr(trainer, "accumulate_grad_batches", 1) or 1) if trainer is not None else 1
    if "evaluate" not in fields:
        loaders = fields["loaders"] if isinstance(fields["loaders"], Mapping) else {}
        val = loaders.get("val")
        fields["evaluate"] = (_Evaluate(val, loaders.get("train"), list(fields["monitors"]))
                              if val is not None else None)
    if "train_epoch" not in fields:
        fields["train_epoch"] = train_epoch
    if "run_dir" not in fields and trainer is not None:
        with contextlib.suppress(Exception):
            fields["run_dir"] = os.fspath(run_dir_of(trainer))
    return fields


def _gist(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _model_factory(module: Any, trainer: Any) -> Callable[[], Any]:
    """A fresh module per call: re-made from its saved hyper-parameters when they cover
    every argument of ``__init__`` (new random weights each time), else a copy of the module
    as it is now -- which must not have trained yet."""
    cls = type(module)
    hparams = dict(getattr(module, "hparams", {}) or {})
    try:
        inspect.signature(cls).bind(**hparams)
        rebuildable = True
    except (TypeError, ValueError):
        rebuildable = False
    if rebuildable:
        return lambda: cls(**copy.deepcopy(hparams))
    attached = getattr(module, "_trainer", None) or trainer
    steps = int(getattr(attached, "global_step", 0) or 0) if attached is not None else 0
    if steps > 0:
        raise SubjectError(
            f"from_lightning: model: {cls.__name__} has trained {steps} steps and its hparams do not rebuild it "
            f"(save_hyperparameters() with every __init__ argument); pass model=lambda: {cls.__name__}(...)")
    snapshot = copy.deepcopy(module)
    return lambda: copy.deepcopy(snapshot)


def _datamodule_of(trainer: Any) -> Any:
    return getattr(trainer, "datamodule", None) if trainer is not None else None


def _overridden(obj: Any, name: str, base: type) -> bool:
    own = getattr(type(obj), name, None)
    return own is not None and own is not getattr(base, name, None)


def _loaders(module: Any, datamodule: Any) -> dict[str, Any]:
    """``{"train", "val"}`` from the datamodule (prepared and set up as ``fit`` does), else
    from the module's own dataloader hooks."""
    base: type
    if datamodule is not None:
        source, base, what = datamodule, pl.LightningDataModule, "datamodule"
        for step in ("prepare_data", "setup"):
            try:
                getattr(datamodule, step)(*(("fit",) if step == "setup" else ()))
            except Exception as exc:  # noqa: BLE001 - user code
                raise SubjectError(f"from_lightning: {type(datamodule).__name__}.{step}(): {_gist(exc)}") from None
    else:
        source, base, what = module, pl.LightningModule, type(module).__name__
        if not _overridden(module, "train_dataloader", base):
            raise SubjectError(f"from_lightning: loaders: {what} has no train_dataloader() and no datamodule was "
                               "given; pass datamodule=... or loaders={'train': ..., 'val': ...}")
        if _overridden(module, "setup", base):
            try:
                module.setup("fit")
            except Exception as exc:  # noqa: BLE001 - user code
                raise SubjectError(f"from_lightning: {what}.setup('fit'): {_gist(exc)}") from None
    loaders: dict[str, Any] = {}
    for split, hook in (("train", "train_dataloader"), ("val", "val_dataloader")):
        if not _overridden(source, hook, base):
            continue
        try:
            loader = getattr(source, hook)()
        except Exception as exc:  # noqa: BLE001 - user code
            raise SubjectError(f"from_lightning: {type(source).__name__}.{hook}(): {_gist(exc)}") from None
        if isinstance(loader, (list, tuple)):  # several val loaders: val, val_1, ...
            for i, item in enumerate(loader):
                loaders[split if i == 0 else f"{split}_{i}"] = item
        elif loader is not None:
            loaders[split] = loader
    if "train" not in loaders:
        raise SubjectError(f"from_lightning: loaders: {what} gives no train_dataloader(); "
                           "pass loaders={'train': ..., 'val': ...}")
    return loaders


_LOSS_ATTRIBUTES = ("loss_fn", "criterion", "loss_func", "loss_function", "loss")


def _find_loss(module: Any) -> Callable[..., Any]:
    """The module's training loss: the one torch loss module it holds, or a callable
    attribute named like a loss."""
    import torch

    held = [m for m in module.modules() if isinstance(m, torch.nn.modules.loss._Loss)]
    if len(held) == 1:
        return held[0]  # type: ignore[no-any-return]
    for name in _LOSS_ATTRIBUTES:
        value = getattr(module, name, None)
        if callable(value) and not isinstance(value, type):
            return value  # type: ignore[no-any-return]
    what = f"holds {len(held)} loss modules" if held else "holds no torch loss module and no " + "/".join(_LOSS_ATTRIBUTES)
    raise SubjectError(f"from_lightning: loss: {type(module).__name__} {what}; pass loss=fn(logits, y), "
                       "e.g. torch.nn.CrossEntropyLoss()")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 2 else None


def _num_classes(module: Any, datamodule: Any) -> int:
    hparams = dict(getattr(module, "hparams", {}) or {})
    for value in (getattr(module, "num_classes", None), *(hparams.get(k) for k in ("num_classes", "n_classes", "num_labels")),
                  getattr(datamodule, "num_classes", None), _example_width(module)):
        found = _int(value)
        if found is not None:
            return found
    raise SubjectError(f"from_lightning: num_classes: not in {type(module).__name__}'s hparams or attributes, the "
                       "datamodule, or the output of example_input_array; pass num_classes=C")


def _example_width(module: Any) -> int | None:
    """The last dimension of ``forward(example_input_array)`` on a copy, if the module has one."""
    example = getattr(module, "example_input_array", None)
    if example is None:
        return None
    import torch

    try:
        probe = copy.deepcopy(module)
        probe.eval()
        with torch.no_grad():
            out = probe(**example) if isinstance(example, Mapping) else probe(example)
    except Exception:  # noqa: BLE001 - user code: the error then says what to pass instead
        return None
    out = getattr(out, "logits", out)
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.ndim >= 2 else None


def _monitors(trainer: Any) -> list[str]:
    """The monitor of every ModelCheckpoint and EarlyStopping of the trainer, in order."""
    if trainer is None:
        return []
    watching = lightning_classes("ModelCheckpoint") + lightning_classes("EarlyStopping")
    found: list[str] = []
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None) if isinstance(callback, watching) else None
        if isinstance(monitor, str) and monitor and monitor not in found:
            found.append(monitor)
    return found


# ----------------------------------------------------------------------- running the module


def _device_of(model: Any) -> Any:
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's notes about a module run outside ``fit`` silenced, nothing else."""
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def _eval_trainer(model: Any, **kwargs: Any) -> Any:
    """A throwaway Trainer on the model's device that writes nothing."""
    device = _device_of(model)
    accelerator = "cpu" if device.type == "cpu" else ("gpu" if device.type == "cuda" else device.type)
    devices: Any = [device.index] if device.type == "cuda" and device.index is not None else 1
    return pl.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in metrics.items():
        item = getattr(value, "item", None)
        try:
            out[str(name)] = float(item() if callable(item) else value)
        except (TypeError, ValueError, RuntimeError):
            out[str(name)] = math.nan
    return out


class _Evaluate:
    """``evaluate(model)``: one real validation pass through Lightning, returning the
    metrics a ``ModelCheckpoint`` monitor is matched against (``trainer.callback_metrics``)."""

    def __init__(self, val_loader: Any, train_loader: Any, monitors: list[str]) -> None:
        self.val_loader = val_loader
        self.train_loader = train_loader
        self.monitors = monitors

    def __call__(self, model: Any) -> dict[str, float]:
        with _quiet():
            trainer = _eval_trainer(model)
            trainer.validate(model, dataloaders=self.val_loader, verbose=False)
            metrics = _scalars(trainer.callback_metrics)
            if self.train_loader is not None and any(m not in metrics for m in self.monitors):
                # a monitor may name a metric logged in training_step: its names, from one
                # batch on a copy whose optimizer has learning rate 0
                for name, value in _training_names(model, self.train_loader).items():
                    metrics.setdefault(name, value)
        return metrics


def _training_names(model: Any, train_loader: Any) -> dict[str, float]:
    import torch

    probe = copy.deepcopy(model)
    probe.configure_optimizers = lambda: torch.optim.SGD(probe.parameters(), lr=0.0)
    trainer = _eval_trainer(probe, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    try:
        trainer.fit(probe, train_dataloaders=train_loader)
    except Exception:  # noqa: BLE001 - the validation keys stand on their own
        return {}
    return _scalars(trainer.callback_metrics)


def train_epoch(model: Any, loader: Any, optimizer: Any, accumulate: int) -> None:
    """One pass of ``model.training_step`` over ``loader`` with ``optimizer``.

    Automatic optimization steps as Lightning does: each batch's loss divided by
    ``accumulate`` and back-propagated, the optimizer stepped after every ``accumulate``
    batches and after the last one.  Manual optimization runs the module's own stepping,
    with ``self.optimizers()`` returning ``optimizer`` and ``self.manual_backward`` a plain
    ``backward``: accumulation is then whatever the module's code does.
    """
    device = _device_of(model)
    model.train()
    with _quiet():
        if not getattr(model, "automatic_optimization", True):
            with _manual_optimization(model, optimizer):
                for i, batch in enumerate(loader):
                    model.training_step(_to_device(batch, device), i)
            return
        total = len(loader) if hasattr(loader, "__len__") else None
        optimizer.zero_grad()
        pending = False
        for i, batch in enumerate(loader):
            out = model.training_step(_to_device(batch, device), i)
            loss = out.get("loss") if isinstance(out, Mapping) else out
            if loss is not None:
                (loss / accumulate).backward()
                pending = True
            if (i + 1) % accumulate == 0 or (total is not None and i + 1 == total):
                optimizer.step()
                optimizer.zero_grad()
                pending = False
        if pending:
            optimizer.step()
            optimizer.zero_grad()


def _to_device(batch: Any, device: Any) -> Any:
    try:
        from lightning.fabric.utilities.apply_func import move_data_to_device
    except ImportError:
        from lightning_fabric.utilities.apply_func import move_data_to_device  # type: ignore[no-redef]
    return move_data_to_device(batch, device)


@contextlib.contextmanager
def _manual_optimization(model: Any, optimizer: Any) -> Iterator[None]:
    """What a manual-optimization ``training_step`` asks of its trainer, answered with
    ``optimizer``, on the instance for the duration."""
    import torch

    def clip_gradients(opt: Any, gradient_clip_val: float | None = None,
                       gradient_clip_algorithm: str | None = None) -> None:
        if gradient_clip_val:
            params = [p for group in opt.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    shims: dict[str, Any] = {
        "optimizers": lambda use_pl_optimizer=True: optimizer,
        "lr_schedulers": lambda: None,
        "manual_backward": lambda loss, *args, **kwargs: loss.backward(*args, **kwargs),
        "toggle_optimizer": lambda opt: None,
        "untoggle_optimizer": lambda opt: None,
        "clip_gradients": clip_gradients,
    }
    for name, fn in shims.items():
        object.__setattr__(model, name, fn)
    try:
        yield
    finally:
        for name in shims:
            model.__dict__.pop(name, None)
