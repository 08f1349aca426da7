"""The digits models, data and Trainer of the Hugging Face callback and adapter tests.

Importable (with this folder on ``sys.path``) so that a conftest can hand the same
``Trainer`` to ``PreflightSubject.from_hf_trainer`` that ``hf_gated_run.py`` trains:

* ``CollapsingMLP`` -- ``DigitsMLP`` whose class-3 logit is pushed down by 1e4 once its
  ``collapsed`` flag is set (``CollapseFrom(epoch)`` sets it at that 1-based epoch's start):
  ``eval_recall_3`` is 0 from then on while every loss stays finite;
* ``pixel_bert()`` -- a one-layer ``BertForSequenceClassification`` built from a config (no weights
  downloaded) reading the 64 pixels of a digit, scaled to 0..16, as 64 tokens: a real
  ``PreTrainedModel`` for the adapter, without dropout so that a batch can be overfit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common  # type: ignore[import-not-found]  # this folder is on sys.path
import torch
import torch.nn.functional as F
from digits_model import DigitsMLP  # type: ignore[import-not-found]
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

COLLAPSE_OFFSET = 1e4


class DigitsDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Items as {"x", "labels"} (DigitsMLP) or {"input_ids", "labels"} (PixelBert)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, tokens: bool = False) -> None:
        self.x, self.y, self.tokens = x, y, tokens

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.tokens:
            return {"input_ids": (self.x[i] * 16).round().long(), "labels": self.y[i]}
        return {"x": self.x[i], "labels": self.y[i]}


class CollapsingMLP(DigitsMLP):
    collapsed = False

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        logits = self.net(x.flatten(1))
        if self.collapsed:
            logits = logits - COLLAPSE_OFFSET * F.one_hot(torch.tensor(common.COLLAPSED_CLASS), logits.shape[-1])
        if labels is None:
            return logits
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class CollapseFrom(TrainerCallback):  # type: ignore[misc]
    """Sets ``model.collapsed`` from the start of 1-based epoch ``start`` (0 = never)."""

    def __init__(self, start: int) -> None:
        self.start = start

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = round(state.epoch or 0) + 1
        kwargs["model"].collapsed = bool(self.start) and epoch >= self.start


def pixel_bert() -> BertForSequenceClassification:
    # no dropout: preflight's overfit_small_batch must be able to drive a batch's loss to ~0
    config = BertConfig(vocab_size=17, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, num_labels=common.CLASSES,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


def compute_metrics(pred: Any) -> dict[str, float]:
    """recall_<c>, min_recall, acc; the Trainer logs them as eval_<name>."""
    return common.metrics(torch.as_tensor(pred.predictions), torch.as_tensor(pred.label_ids))


def make_trainer(out: Path, *, epochs: int = 4, seed: int = 0, model: torch.nn.Module | None = None,
                 tokens: bool = False, callbacks: list[Any] | None = None, **overrides: Any) -> Trainer:
    """The Trainer of hf_run.py (epoch strategies, best by eval_loss, 2 checkpoints kept)."""
    from transformers import set_seed

    set_seed(seed)  # before the model: the Trainer seeds only after the model exists
    x_tr, y_tr, x_va, y_va = common.load_split()
    kwargs: dict[str, Any] = {
        "output_dir": str(out), "eval_strategy": "epoch", "save_strategy": "epoch", "logging_strategy": "epoch",
        "load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False,
        "report_to": "none", "use_cpu": True, "save_total_limit": 2, "seed": seed, "num_train_epochs": epochs,
        "per_device_train_batch_size": common.BATCH, "per_device_eval_batch_size": len(y_va),
        "learning_rate": common.LR, "disable_tqdm": True, "label_names": ["labels"],
        "logging_nan_inf_filter": False, "dataloader_num_workers": 0, **overrides}
    return Trainer(model=model if model is not None else CollapsingMLP(hidden=common.HIDDEN),
                   args=TrainingArguments(**kwargs),
                   train_dataset=DigitsDataset(x_tr, y_tr, tokens), eval_dataset=DigitsDataset(x_va, y_va, tokens),
                   compute_metrics=compute_metrics, callbacks=callbacks or [])
