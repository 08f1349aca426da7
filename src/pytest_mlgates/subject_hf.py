"""The preflight subject of a Hugging Face ``Trainer``: ``PreflightSubject.from_hf_trainer``.

Imported by that classmethod only (it imports transformers).  :func:`hf_trainer_fields`
makes each field the user did not pass from the trainer -- see its docstring.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pytest_mlgates.errors import SubjectError

try:
    import transformers
except ImportError:
    raise ImportError("PreflightSubject.from_hf_trainer needs transformers: pip install transformers accelerate") from None

__all__ = ["hf_trainer_fields"]


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


def hf_trainer_fields(trainer: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``PreflightSubject.from_hf_trainer(trainer, **overrides)``.

    What each field is made of (any keyword argument replaces the field of that name)::

        model        the trainer's model_init, else type(model)(model.config) for a
                     PreTrainedModel (fresh random weights per call); else a copy of the model
                     as given (refused once the trainer has trained it: pass model=)
        loaders      {"train": get_train_dataloader(), "val": get_eval_dataloader()}, each batch
                     as (inputs, labels): the batch dict without the label, and the label
        loss         compute_loss_func, else the model's own sequence-classification loss
                     (problem_type from its config); else pass loss=
        num_classes  model.config.num_labels
        class_names  model.config.id2label in label order, where it names every label once
        monitors     [metric_for_best_model], with the eval_ prefix the Trainer adds
        accumulate   args.gradient_accumulation_steps
        evaluate     one real trainer.evaluate() of the given model: its keys (eval_loss, ...)

    No ``train_epoch``: the Trainer's accumulation is its own loop, set by
    ``gradient_accumulation_steps``.  Where a field cannot be found, a one-line
    :class:`~pytest_mlgates.SubjectError` names the keyword to pass.
    """
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
    if "class_names" not in fields:
        fields["class_names"] = _class_names(trainer.model, fields["num_classes"])
    if "monitors" not in fields:
        fields["monitors"] = _monitors(trainer.args)
    if "accumulate" not in fields:
        fields["accumulate"] = int(trainer.args.gradient_accumulation_steps)
    if "evaluate" not in fields:
        fields["evaluate"] = _Evaluate(trainer) if trainer.eval_dataset is not None else None
    if "run_dir" not in fields:
        fields["run_dir"] = trainer.args.output_dir
    return fields


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


def _class_names(model: Any, num_classes: Any) -> list[str] | None:
    """``config.id2label`` in label order (what ``class_recall`` maps ``eval_recall_<name>``
    columns by), or None where it does not name each of ``num_classes`` labels once."""
    mapping = getattr(getattr(model, "config", None), "id2label", None)
    if not isinstance(mapping, Mapping) or not isinstance(num_classes, int):
        return None
    try:
        names = [mapping[i] for i in range(num_classes)]
    except (KeyError, TypeError):
        return None
    if len(mapping) != num_classes or not all(isinstance(n, str) and n for n in names) or len(set(names)) < len(names):
        return None
    return names


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
