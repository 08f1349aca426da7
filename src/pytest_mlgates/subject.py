"""The user's training code, handed to the plugin: :class:`PreflightSubject`.

A conftest returns one from the ``mlgates_subject`` fixture; ``pytest -m preflight`` then
runs every built-in check the subject gives enough for, and the acceptance gates that
need the model or real data (``checkpoint_softmax`` on real samples, ``reproduces``,
``shortcut``) use it too::

    # conftest.py
    import pytest
    from pytest_mlgates import PreflightSubject

    @pytest.fixture(scope="session")
    def mlgates_subject():
        return PreflightSubject(
            model=lambda: MyNet(num_classes=3),          # a factory: each check gets a fresh model
            loaders={"train": train_dl, "val": val_dl},  # any iterable of (x, y) batches
            loss=torch.nn.CrossEntropyLoss(),
            num_classes=3,
            evaluate=lambda model: my_validate(model, val_dl),  # -> the dict you log
            monitors=["val_loss", "val_f1"],
        )

The class itself imports nothing heavy: a conftest that defines the fixture works with the
plugin disabled (``-p no:mlgates``), and nothing here runs the user's code until a check
asks for it.  Every field is validated when the subject is made; a wrong one is one line
naming the field and what it needs (a :class:`SubjectError`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mlgates.errors import SubjectError

__all__ = ["PreflightSubject", "SubjectError"]




def _is_module_instance(value: Any) -> bool:
    torch = sys.modules.get("torch")
    module = getattr(getattr(torch, "nn", None), "Module", None) if torch is not None else None
    return module is not None and isinstance(value, module)


def _kind(value: Any) -> str:
    return type(value).__name__


@dataclass
class PreflightSubject:
    """What the plugin needs of your code to check it before (and judge it after) training.

    Required: ``model`` (a zero-argument factory returning a fresh ``torch.nn.Module``),
    ``loaders`` (``{"train": ..., "val": ...}``: your real loaders, any iterable of
    ``(x, y)`` batches), ``loss`` (``fn(logits, y) -> scalar tensor``) and ``num_classes``.

    Optional, each enabling the checks that need it:

    * ``sample_ids`` / ``groups`` -- ``{split: ids}``: no sample or group in two splits;
    * ``evaluate`` -- ``fn(model) -> dict`` running one real validation pass and returning
      what you log: monitors are checked against its keys, and ``reproduces`` compares a
      checkpoint's re-evaluation with the logged values;
    * ``monitors`` -- the metric names your checkpointing / early stopping watch;
    * ``accumulate`` -- gradient accumulation steps (default 1);
    * ``train_epoch`` -- ``fn(model, loader, optimizer, accumulate) -> None``, your own
      training step loop, so accumulation wiring is checked through your code;
    * ``model_from_checkpoint`` -- ``fn(checkpoint_dict) -> nn.Module`` with its weights
      loaded, for checkpoints the default rule (``model()`` plus the state dict found under
      ``model``, ``state_dict``, ``model_state_dict`` or the bare dict) cannot rebuild;
    * ``class_names`` -- the name of each label, in label order (``["cat", "dog"]``: label 0
      is ``cat``), so a recall column named by its class (``val_recall_cat``) maps to a label
      where the run itself records no class names: ``class_recall``'s ``confidence:``
      recounts such a class on the ``val`` loader when the log lacks its counts;
    * ``run_dir`` -- where training will write (``run_dir_writable`` checks it when no
      ``--run-dir`` is given);
    * ``name`` -- how messages name the subject (default ``mlgates_subject``).
    """

    model: Callable[[], Any]
    loaders: Mapping[str, Iterable[Any]]
    loss: Callable[..., Any]
    num_classes: int
    sample_ids: Mapping[str, Sequence[Any]] | None = None
    groups: Mapping[str, Sequence[Any]] | None = None
    evaluate: Callable[[Any], Mapping[str, Any]] | None = None
    monitors: Sequence[str] = ()
    accumulate: int = 1
    train_epoch: Callable[..., Any] | None = None
    model_from_checkpoint: Callable[[Any], Any] | None = None
    class_names: Sequence[str] | None = None
    run_dir: str | os.PathLike[str] | None = None
    name: str = "mlgates_subject"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation

    def _error(self, field_name: str, needs: str, got: Any) -> SubjectError:
        return SubjectError(f"{self.name}.{field_name}: needs {needs}; got {_describe(got)}")

    def validate(self) -> None:
        """Every field's type, as far as it can be told without running user code."""
        if _is_module_instance(self.model):
            raise SubjectError(
                f"{self.name}.model: needs a factory that builds a fresh model (e.g. "
                f"lambda: {_kind(self.model)}(...)), so every check starts from new weights; "
                f"got a {_kind(self.model)} instance")
        if not callable(self.model):
            raise self._error("model", "a zero-argument factory returning a torch.nn.Module", self.model)
        if not isinstance(self.loaders, Mapping) or not self.loaders:
            raise self._error("loaders", 'a mapping {"train": loader, "val": loader, ...}', self.loaders)
        for split, loader in self.loaders.items():
            if not isinstance(split, str):
                raise self._error("loaders", "split names as keys (strings)", split)
            if isinstance(loader, (str, bytes, Mapping)) or not hasattr(loader, "__iter__"):
                raise self._error(f"loaders[{split!r}]", "an iterable of (x, y) batches (e.g. a DataLoader)", loader)
        if "train" not in self.loaders:
            raise SubjectError(f"{self.name}.loaders: needs a 'train' loader; got splits {', '.join(self.loaders)}")
        if not callable(self.loss):
            raise self._error("loss", "fn(logits, y) -> loss, e.g. torch.nn.CrossEntropyLoss()", self.loss)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise self._error("num_classes", "a whole number >= 2", self.num_classes)
        for name in ("sample_ids", "groups"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise self._error(name, "a mapping {split: ids}", value)
            for split, ids in value.items():
                if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
                    raise self._error(f"{name}[{split!r}]", "a sequence or array of ids", ids)
        if self.evaluate is not None and not callable(self.evaluate):
            raise self._error("evaluate", "fn(model) -> dict of the metrics you log", self.evaluate)
        if isinstance(self.monitors, (str, bytes)):
            raise SubjectError(f"{self.name}.monitors: needs a list of metric names; got the string "
                               f"{self.monitors!r} (write [{self.monitors!r}])")
        if not isinstance(self.monitors, Sequence) or not all(isinstance(m, str) and m for m in self.monitors):
            raise self._error("monitors", "a list of metric names", self.monitors)
        if isinstance(self.accumulate, bool) or not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise self._error("accumulate", "a whole number >= 1", self.accumulate)
        for name in ("train_epoch", "model_from_checkpoint"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise self._error(name, "a function or None", value)
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, (str, bytes)):
                raise SubjectError(f"{self.name}.class_names: needs a list of names, one per label; got the "
                                   f"string {names!r}")
            if not isinstance(names, Sequence) or not all(isinstance(n, str) and n for n in names):
                raise self._error("class_names", "a list of non-empty strings, one per label in label order", names)
            if len(names) != self.num_classes:
                raise SubjectError(f"{self.name}.class_names: needs one name per label ({self.num_classes}, "
                                   f"num_classes); got {len(names)}")
            seen: set[str] = set()
            twice = None
            for name in names:
                if name in seen:
                    twice = name
                    break
                seen.add(name)
            if twice is not None:
                raise SubjectError(f"{self.name}.class_names: {twice!r} appears twice; each label needs its own name")
        if self.run_dir is not None and not isinstance(self.run_dir, (str, os.PathLike)):
            raise self._error("run_dir", "a path or None", self.run_dir)
        if not isinstance(self.name, str) or not self.name:
            raise self._error("name", "a non-empty string", self.name)

    # ------------------------------------------------------------------ adapters

    @classmethod
    def _known_overrides(cls, adapter: str, overrides: Mapping[str, Any]) -> None:
        """Every keyword an adapter is given names a field (one line with the closest)."""
        import dataclasses
        import difflib

        known = sorted(f.name for f in dataclasses.fields(cls) if f.name != "extra")
        for key in overrides:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise SubjectError(f"{adapter}: unknown field {key!r}{hint}; fields: {', '.join(known)}")

    @classmethod
    def from_lightning(cls, module: Any, datamodule: Any = None, trainer: Any = None, **overrides: Any) -> PreflightSubject:
        """The subject of a ``LightningModule`` (and its ``LightningDataModule``): monitors
        from the trainer's ``ModelCheckpoint``/``EarlyStopping``, logged names from one real
        validation step, accumulation from ``accumulate_grad_batches``.  Imports Lightning."""
        cls._known_overrides("from_lightning", overrides)
        from pytest_mlgates.subject_lightning import lightning_fields

        return cls(**lightning_fields(module, datamodule, trainer, overrides))

    @classmethod
    def from_hf_trainer(cls, trainer: Any, **overrides: Any) -> PreflightSubject:
        """The subject of a Hugging Face ``Trainer``: ``metric_for_best_model`` (with the
        ``eval_`` prefix the Trainer adds) checked against one real evaluation's keys,
        ``gradient_accumulation_steps``, the train/eval datasets.  Imports transformers."""
        cls._known_overrides("from_hf_trainer", overrides)
        from pytest_mlgates.subject_hf import hf_trainer_fields

        return cls(**hf_trainer_fields(trainer, overrides))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_kind(value)} {text}" if not isinstance(value, (int, float, str)) or isinstance(value, bool) else text
