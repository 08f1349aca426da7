"""Models rebuilt from checkpoints, and real samples to run them on.

A checkpoint holds weights, not code.  The model to load them into comes from one of two
places, both code under test and reviewed like a test, never from the run dir:

* the ``mlgates_subject`` fixture (:class:`~pytest_mlgates.PreflightSubject`), the code
  that trained the run: its ``model_from_checkpoint(ckpt)``, else ``model()`` given the
  state dict (:func:`model_from_subject`); its loaders give real samples
  (:func:`first_samples`);
* else the gate file names a class: ``model: "mypkg.nets:Net"`` (with ``kwargs:``), built
  and given the checkpoint's state dict (:func:`model_from_target`).

The state dict is found the same way for every gate and for ``mlgates prove``
(``checkpoint_io.state_dict_of``): under ``state_dict``, ``model_state_dict`` or ``model``, or the
checkpoint is a bare state dict; a ``model.`` prefix on every key (a LightningModule that
holds its net as ``self.model``) is stripped when the bare model's keys lack it.

torch is imported inside the functions: this module loads only when a gate needs a model.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pytest_mlgates.errors import GateFailure, MlgatesError

__all__ = [
    "first_samples", "forward", "load_weights", "logits_of", "model_from_subject", "model_from_target",
    "shared_model_from_target", "to_device_of",
]

def gist(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line, shortened (load_state_dict writes several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = text or exc.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_weights(model: Any, ckpt: Any, shown: str, label: str, prefix: str | None = None) -> Any:
    """``model`` with the checkpoint's state dict (``checkpoint_io.state_dict_of``) loaded
    (strictly), in eval mode."""
    import torch

    from pytest_mlgates.checkpoint_io import state_dict_of

    if not isinstance(model, torch.nn.Module):
        raise GateFailure(f"{label} built a {type(model).__name__}, not a torch.nn.Module")
    state = state_dict_of(ckpt, shown)
    own = set(model.state_dict())
    if prefix is None and state and all(str(k).startswith("model.") for k in state) \
            and not any(k.startswith("model.") for k in own):
        prefix = "model."
    if prefix:
        state = {(k[len(prefix):] if str(k).startswith(prefix) else k): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a mismatch raises RuntimeError, a bad value others
        raise GateFailure(f"{shown}: weights do not fit {label} ({gist(exc)})") from None
    model.eval()
    return model


def is_import_target(target: str) -> bool:
    """``package.module:ClassName``: dotted identifiers, no relative or path-like names."""
    module_name, _, class_name = str(target).partition(":")
    parts = module_name.split(".")
    return bool(module_name) and all(p.isidentifier() for p in parts) and class_name.isidentifier()


def model_from_target(ckpt: Any, params: Mapping[str, Any], shown: str) -> Any:
    """The class the gate file names (``model: "pkg.mod:Class"``, ``kwargs:``), built and
    loaded with the checkpoint's state dict (``prefix:`` stripped from its keys)."""
    target = str(params["model"])
    if not is_import_target(target):
        raise GateFailure(f"model {target!r}: expected 'package.module:ClassName'")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:  # noqa: BLE001 - importing the code under test may raise anything
        raise GateFailure(f"model {target!r}: cannot import ({exc.__class__.__name__}: {gist(exc)})") from None
    try:
        model = cls(**(params.get("kwargs") or {}))
    except Exception as exc:  # noqa: BLE001 - user code under test
        raise GateFailure(f"model {target!r}: constructor failed ({exc.__class__.__name__}: {gist(exc)})") from None
    return load_weights(model, ckpt, shown, target, params.get("prefix"))


def shared_model_from_target(ckpt: Any, params: Mapping[str, Any], shown: str) -> Any:
    """:func:`model_from_target`, built once per (checkpoint, class, kwargs, prefix) and kept
    in ``memo.MODELS``: two criteria on one checkpoint build and load it once.  For the
    gates only, which evaluate it in eval mode under ``torch.no_grad``; a model handed to
    user code (the ``load_model`` fixture) is always a fresh one."""
    from pytest_mlgates import memo

    kwargs = params.get("kwargs") or {}
    key = (id(ckpt), str(params["model"]), repr(sorted(kwargs.items())) if isinstance(kwargs, Mapping)
           else repr(kwargs), params.get("prefix"))
    hit = memo.MODELS.get(key)
    if hit is not None and hit[0] is ckpt:  # the entry holds ckpt, so its id was not reused
        return hit[1]
    model = model_from_target(ckpt, params, shown)
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    memo.MODELS.put(key, (ckpt, model), size)
    return model


def model_from_subject(subject: Any, ckpt: Any, shown: str) -> Any:
    """The subject's model with the checkpoint's weights, in eval mode."""
    label = f"{subject.name}.model()"
    try:
        if subject.model_from_checkpoint is not None:
            label = f"{subject.name}.model_from_checkpoint"
            model = subject.model_from_checkpoint(ckpt)
            model.eval()
            return model
        model = subject.model()
    except MlgatesError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code under test
        if isinstance(exc, RuntimeError) and "state_dict" in str(exc):
            raise GateFailure(f"{shown}: weights do not fit the model of {label} ({gist(exc)})") from None
        raise GateFailure(f"{shown}: {label} failed ({exc.__class__.__name__}: {gist(exc)})") from None
    return load_weights(model, ckpt, shown, label)


def logits_of(output: Any) -> Any:
    """The logits of a forward pass: a tensor, ``.logits`` (a Hugging Face ModelOutput),
    ``["logits"]`` of a dict, or the first element of a tuple."""
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


def forward(model: Any, x: Any) -> Any:
    """``model(x)`` (``model(**x)`` for a dict of inputs) as logits."""
    return logits_of(model(**x) if isinstance(x, Mapping) else model(x))


def to_device_of(value: Any, model: Any) -> Any:
    """A batch part as tensors on the model's device (numpy arrays converted, float64 to
    float32, dicts of inputs kept as dicts)."""
    import torch

    if isinstance(value, Mapping):
        return {k: to_device_of(v, model) for k, v in value.items()}
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if value.dtype == torch.float64:
        value = value.float()
    device = next((p.device for p in model.parameters()), None)
    return value.to(device) if device is not None else value


def first_samples(subject: Any, split: str, n: int) -> tuple[Any, Any, str]:
    """Up to ``n`` samples of the subject's ``split`` loader (else its first loader):
    (inputs, labels, where they came from)."""
    import torch

    loaders = subject.loaders
    name = split if split in loaders else next(iter(loaders))
    xs: list[Any] = []
    ys: list[Any] = []
    have = 0
    try:
        for batch in loaders[name]:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise GateFailure(f"{subject.name}.loaders[{name!r}]: batches are not (x, y) pairs")
            x, y = batch
            xs.append(x)
            ys.append(torch.as_tensor(y))
            have += len(y)
            if have >= n:
                break
    except MlgatesError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code
        raise GateFailure(f"{subject.name}.loaders[{name!r}]: {exc.__class__.__name__}: {gist(exc)}") from None
    if not xs:
        raise GateFailure(f"{subject.name}.loaders[{name!r}] gave no samples")
    if isinstance(xs[0], Mapping):
        x_all: Any = {k: torch.cat([torch.as_tensor(x[k]) for x in xs])[:n] for k in xs[0]}
    else:
        x_all = torch.cat([torch.as_tensor(x) for x in xs])[:n]
    y_all = torch.cat(ys)[:n]
    return x_all, y_all, f"{len(y_all)} {name} samples"
