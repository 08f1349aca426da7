"""A Hugging Face Trainer run of DigitsMLP: the run dir is OUT.

OUT/checkpoint-<step>/ per epoch (at most 2 kept, the best always among them), and at the
end OUT/model.safetensors (the best weights: load_best_model_at_end), OUT/trainer_state.json
(log_history with loss per epoch and eval_loss, eval_acc, eval_recall_<c>,
eval_min_recall per epoch; best_model_checkpoint), OUT/training_args.bin.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]
import torch
from digits_model import DigitsMLP  # type: ignore[import-not-found]


class DigitsDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Items as {"x", "labels"}: the keys DigitsMLP.forward takes, so no column is dropped."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def compute_metrics(pred: Any) -> dict[str, float]:
    """recall_<c>, min_recall, acc; the Trainer logs them as eval_<name>."""
    return common.metrics(torch.as_tensor(pred.predictions), torch.as_tensor(pred.label_ids))


def run(args: argparse.Namespace) -> Path:
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    class NanAfterEpoch(TrainerCallback):
        """The ``nan`` fault, at the start of the next epoch.

        Not on_epoch_end: the Trainer calls it before that epoch's evaluation and save.
        """

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.epoch is not None and round(state.epoch) == common.NAN_AFTER_EPOCH:
                common.poison(kwargs["model"])

    set_seed(args.seed)  # before DigitsMLP(): the Trainer seeds only after the model exists
    x_tr, y_tr, x_va, y_va = common.load_split(args.fault)
    targs = TrainingArguments(
        output_dir=str(args.out), eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="eval_loss",
        greater_is_better=False, report_to="none", use_cpu=True, save_total_limit=2,
        seed=args.seed, num_train_epochs=args.epochs, per_device_train_batch_size=common.BATCH,
        per_device_eval_batch_size=len(y_va), learning_rate=common.LR, disable_tqdm=True,
        label_names=["labels"], logging_nan_inf_filter=False, dataloader_num_workers=0)
    trainer = Trainer(model=DigitsMLP(hidden=common.HIDDEN), args=targs,
                      train_dataset=DigitsDataset(x_tr, y_tr),
                      eval_dataset=DigitsDataset(x_va, y_va), compute_metrics=compute_metrics,
                      callbacks=[NanAfterEpoch()] if args.fault == "nan" else [])
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    if args.fault == "no_best":
        best = trainer.state.best_model_checkpoint
        assert best is not None, "no best checkpoint was recorded"
        shutil.rmtree(args.out / Path(best).name)
    return args.out


if __name__ == "__main__":
    common.main(run, __doc__ or "")
