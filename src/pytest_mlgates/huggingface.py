"""Hugging Face ``Trainer``: in-flight gates as a callback, and the preflight subject of a trainer.

Importing this module imports transformers; nothing else in the plugin does::

    from pytest_mlgates.huggingface import GatesCallback

    trainer = Trainer(..., args=TrainingArguments(..., eval_strategy="epoch", save_strategy="epoch"),
                      callbacks=[GatesCallback("acceptance/inflight.gates.yaml", after_epoch=1)])

When the callback judges, and why (transformers 5.x, read from ``Trainer._run_epoch`` and
``_maybe_log_save_evaluate``):

* At the end of an epoch the Trainer calls ``on_epoch_end``, then logs, evaluates
  (``on_evaluate``) and saves: ``checkpoint-N/`` with the weights, optimizer, scheduler, RNG
  state and ``trainer_state.json`` -- whose ``log_history`` is the run's log until
  ``save_state()`` writes one at the top -- then ``on_save``.  Nothing of the epoch is on
  disk before the save, and everything is after it.
* So the callback judges in ``on_save`` (on the world's process zero, the verdict then sent
  to every rank), once ``after_epoch`` epochs are complete.  A RED verdict sets
  ``control.should_training_stop``: the Trainer leaves its loop right after that save, and
  the newest ``checkpoint-N/`` (the resume point) holds the same epochs as the log.
* With ``save_strategy="steps"`` every save is judged (the epoch in the record is the
  completed epochs so far); with ``"no"`` nothing reaches the disk while training, and the
  callback says so once.

The run dir is ``args.output_dir``; a RED verdict is recorded there in
``mlgates_inflight.json``.  :func:`subject_from_hf_trainer`
(``PreflightSubject.from_hf_trainer``) builds the preflight subject of a trainer.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pytest_mlgates.inflight import Gates, InflightGateWarning, Verdict
from pytest_mlgates.subject import PreflightSubject, SubjectError

try:
    import transformers
    from transformers import TrainerCallback
except ImportError:
    raise ImportError("pytest_mlgates.huggingface needs transformers: pip install transformers accelerate") from None

__all__ = ["GatesCallback", "subject_from_hf_trainer"]

log = logging.getLogger("pytest_mlgates.huggingface")


def _named_format(gates: Gates) -> str | None:
    section = getattr(gates.document, "run", None)
    if isinstance(section, Mapping):
        return section.get("format")
    return getattr(section, "format", None)


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value))


class GatesCallback(TrainerCallback):  # type: ignore[misc]
    """In-flight gates for a Hugging Face ``Trainer``: a doomed run stops, on record.

    ``gate_file`` is parsed here, so a broken file fails when the callback is made, before
    any training, with the one-line :class:`~pytest_mlgates.errors.GateFileError`.
    ``after_epoch`` is the first completed epoch (counted from 1) that is judged.
    ``run_format`` forces a reader (default: the gate file's ``run:`` section, else
    ``huggingface``).

    The run is judged in ``on_save``, when the epoch's ``checkpoint-N/`` (and its
    ``trainer_state.json``, the log) is on disk; a RED verdict sets
    ``control.should_training_stop``, is recorded in ``<output_dir>/mlgates_inflight.json``
    and kept in :attr:`verdict`.  A criterion that cannot be judged yet is an
    :class:`~pytest_mlgates.inflight.InflightGateWarning`, and the run goes on.  Under DDP
    only process zero reads the output dir; every rank gets its verdict.
    """

    def __init__(self, gate_file: str | os.PathLike[str], after_epoch: int = 1,
                 run_format: str | None = None) -> None:
        self.gate_file = gate_file
        self.after_epoch = after_epoch
        self.run_format = run_format
        # parsed now: a broken gate file stops the script before the Trainer starts
        self.gates = Gates(gate_file, run_dir=os.curdir, after_epoch=after_epoch, run_format=run_format)
        #: The RED verdict that stopped the run.
        self.verdict: Verdict | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.gates.run_dir = Path(args.output_dir)
        self.gates.run_format = self.run_format
        if self.run_format is None and _named_format(self.gates) is None:
            self.gates.run_format = "huggingface"
        self.verdict = None
        if _strategy(args.save_strategy) == "no" and state.is_world_process_zero:
            warnings.warn(f"in-flight gates: save_strategy='no': the Trainer writes no log or checkpoint to "
                          f"{args.output_dir} while it trains, so {self.gate_file} is never judged; "
                          "use save_strategy='epoch'", InflightGateWarning, stacklevel=2)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        completed = math.floor(state.epoch + 1e-6) if state.epoch is not None else 0
        if self.verdict is not None or completed < self.after_epoch:
            return
        verdict = self.gates.check_or_warn(completed) if state.is_world_process_zero else None
        verdict = _broadcast(verdict)
        if verdict is not None and verdict.red:
            self.verdict = verdict
            control.should_training_stop = True
            if state.is_world_process_zero:
                log.warning("in-flight gate RED after epoch %d: %s; recorded in %s", completed, verdict.reason,
                            self.gates.run_dir / "mlgates_inflight.json")



def _broadcast(verdict: Verdict | None) -> Verdict | None:
    """Process zero's verdict on every rank (torch.distributed, when it is running)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return verdict
    box = [verdict]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# =========================================================================== the subject


class _PairLoader:
    """A Trainer DataLoader of dict batches as ``(inputs, labels)``: the inputs are the
    batch's other keys, given to the model as ``model(**inputs)``."""

    def __init__(self, loader: Any, label_name: str) -> None:
        self.loader = loader
        self.label_name = label_name

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for batch in self.loader:
            if not isinstance(batch, Mapping) or self.label_name not in batch:
                keys = ", ".join(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
                raise SubjectError(f"a batch has no '{self.label_name}' (got {keys}); set "
                                   "TrainingArguments(label_names=[...]) or pass loaders=")
            yield {k: v for k, v in batch.items() if k != self.label_name}, batch[self.label_name]


def subject_from_hf_trainer(trainer: Any, **overrides: Any) -> PreflightSubject:
    """The :class:`~pytest_mlgates.PreflightSubject` of a Hugging Face ``Trainer``.

    What each field is made of (any keyword argument replaces the field of that name)::

        model        the trainer's model_init, else type(model)(model.config) for a
                     PreTrainedModel (fresh random weights per call); else a copy of the model
                     as given (refused once the trainer has trained it: pass model=)
        loaders      {"train": get_train_dataloader(), "val": get_eval_dataloader()}, each batch
                     as (inputs, labels): the batch dict without the label, and the label
        loss         compute_loss_func, else the model's own sequence-classification loss
                     (problem_type from its config); else pass loss=
        num_classes  model.config.num_labels
        monitors     [metric_for_best_model], with the eval_ prefix the Trainer adds
        accumulate   args.gradient_accumulation_steps
        evaluate     one real trainer.evaluate() of the given model: its keys (eval_loss, ...)

    No ``train_epoch``: the Trainer's accumulation is its own loop, set by
    ``gradient_accumulation_steps``.  Where a field cannot be found, a one-line
    :class:`~pytest_mlgates.SubjectError` names the keyword to pass.
    """
    import dataclasses

    known = {f.name for f in dataclasses.fields(PreflightSubject)} - {"extra"}
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SubjectError(f"from_hf_trainer: unknown field {key!r}{hint}; fields: {', '.join(sorted(known))}")
    if not isinstance(trainer, transformers.Trainer):
        raise SubjectError(f"from_hf_trainer: trainer needs a transformers.Trainer; got {type(trainer).__name__}")
    fields: dict[str, Any] = dict(overrides)
    if "model" not in fields:
        fields["model"] = _model_factory(trainer)
    if "loaders" not in fields:
        fields["loaders"] = _loaders(trainer)
    if "loss" not in fields:
        fields["loss"] = _find_loss(trainer)
    if "num_classes" not in fields:
        fields["num_classes"] = _num_classes(trainer.model)
    if "monitors" not in fields:
        fields["monitors"] = _monitors(trainer.args)
    if "accumulate" not in fields:
        fields["accumulate"] = int(trainer.args.gradient_accumulation_steps)
    if "evaluate" not in fields:
        fields["evaluate"] = _Evaluate(trainer) if trainer.eval_dataset is not None else None
    if "run_dir" in known and "run_dir" not in fields:
        fields["run_dir"] = trainer.args.output_dir
    return PreflightSubject(**fields)


def _gist(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _model_factory(trainer: Any) -> Callable[[], Any]:
    if getattr(trainer, "model_init", None) is not None:
        return lambda: trainer.call_model_init()
    model = trainer.model
    if isinstance(model, transformers.PreTrainedModel):
        cls, config = type(model), copy.deepcopy(model.config)
        return lambda: cls(copy.deepcopy(config))
    if trainer.state.global_step > 0:
        raise SubjectError(f"from_hf_trainer: model: the trainer has trained its {type(model).__name__} "
                           f"{trainer.state.global_step} steps; pass model=lambda: {type(model).__name__}(...)")
    snapshot = copy.deepcopy(model)
    return lambda: copy.deepcopy(snapshot)


def _label_name(trainer: Any) -> str:
    names = list(getattr(trainer, "label_names", None) or trainer.args.label_names or ["labels"])
    if len(names) != 1:
        raise SubjectError(f"from_hf_trainer: loaders: the trainer's label_names are {names}; a classification "
                           "subject has one label: pass loaders= yielding (inputs, labels)")
    return str(names[0])


def _loaders(trainer: Any) -> dict[str, Any]:
    label = _label_name(trainer)
    try:
        loaders: dict[str, Any] = {"train": _PairLoader(trainer.get_train_dataloader(), label)}
    except Exception as exc:  # noqa: BLE001 - no train_dataset, a collator error, ...
        raise SubjectError(f"from_hf_trainer: loaders: get_train_dataloader(): {_gist(exc)}") from None
    evals = trainer.eval_dataset
    names: list[Any] = list(evals) if isinstance(evals, Mapping) else ([None] if evals is not None else [])
    for i, name in enumerate(names):
        try:
            loader = trainer.get_eval_dataloader(name)
        except Exception as exc:  # noqa: BLE001 - user data
            raise SubjectError(f"from_hf_trainer: loaders: get_eval_dataloader({name!r}): {_gist(exc)}") from None
        loaders["val" if i == 0 else f"val_{name}"] = _PairLoader(loader, label)
    return loaders


_CLASSIFIERS = ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification")


def _find_loss(trainer: Any) -> Callable[..., Any]:
    """The loss the Trainer trains with: its ``compute_loss_func``, else the model's own
    classification loss, by the same rule as its forward (``config.problem_type``)."""
    custom = getattr(trainer, "compute_loss_func", None)
    if custom is not None:
        return lambda logits, y: custom({"logits": logits}, y)
    model = trainer.model
    if isinstance(model, transformers.PreTrainedModel) and type(model).__name__.endswith(_CLASSIFIERS):
        from transformers.loss.loss_utils import ForSequenceClassificationLoss

        config = copy.deepcopy(model.config)  # the loss fills in problem_type: on a copy
        return lambda logits, y: ForSequenceClassificationLoss(labels=y, pooled_logits=logits, config=config)
    raise SubjectError(f"from_hf_trainer: loss: {type(model).__name__} computes its loss inside forward; pass "
                       "loss=fn(logits, labels), e.g. torch.nn.CrossEntropyLoss()")


def _num_classes(model: Any) -> int:
    config = getattr(model, "config", None)
    for value in (getattr(config, "num_labels", None), getattr(model, "num_labels", None),
                  getattr(model, "num_classes", None)):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
            return value
    raise SubjectError(f"from_hf_trainer: num_classes: {type(model).__name__} has no config.num_labels >= 2; "
                       "pass num_classes=C")


def _monitors(args: Any) -> list[str]:
    """``metric_for_best_model`` as the Trainer looks it up: with the ``eval_`` prefix."""
    metric = args.metric_for_best_model
    if not metric:
        return []
    return [metric if metric.startswith("eval_") else f"eval_{metric}"]


class _Evaluate:
    """``evaluate(model)``: one real ``trainer.evaluate()`` of ``model`` (swapped in for the
    call), returning its metrics; the trainer's model, log history and accelerator are put
    back after."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def __call__(self, model: Any) -> dict[str, float]:
        trainer = self.trainer
        saved = (trainer.model, trainer.model_wrapped, len(trainer.state.log_history),
                 list(getattr(trainer.accelerator, "_models", [])))
        model.to(trainer.args.device)
        trainer.model = trainer.model_wrapped = model
        try:
            metrics = trainer.evaluate()
        finally:
            trainer.model, trainer.model_wrapped = saved[0], saved[1]
            del trainer.state.log_history[saved[2]:]
            if hasattr(trainer.accelerator, "_models"):
                trainer.accelerator._models[:] = saved[3]
        return {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
