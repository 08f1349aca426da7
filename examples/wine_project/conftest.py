"""This project's code, handed to pytest-mlgates once.

``pytest -m preflight`` runs the plugin's checks on it before any training (real loaders,
a fresh model per check, the loss at init, a small batch overfit, every monitor a key the
validation pass returns, our loop stepping once per ``accumulate`` batches); the
acceptance gates that need a model (``checkpoint_softmax`` on real val samples) use it too.
Imports happen inside the fixture: a session that needs no model imports no torch.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mlgates_subject():  # type: ignore[no-untyped-def]
    import torch
    from pytest_mlgates import PreflightSubject
    from torch.utils.data import DataLoader, TensorDataset

    from model import ModelConfig, build_model, evaluate
    from wine.data import NUM_CLASSES, load_data
    from wine.train_plain import train_one_epoch

    config = ModelConfig()
    data = load_data(seed=0)
    loaders = {
        "train": DataLoader(TensorDataset(data.x["train"], data.y["train"]), batch_size=config.batch_size,
                            shuffle=True, generator=torch.Generator().manual_seed(0)),
        "val": DataLoader(TensorDataset(data.x["val"], data.y["val"]), batch_size=64),
        "test": DataLoader(TensorDataset(data.x["test"], data.y["test"]), batch_size=64),
    }

    @torch.no_grad()
    def validate(net: torch.nn.Module) -> dict[str, float]:
        net.eval()
        return evaluate(net(data.x["val"]), data.y["val"], prefix="val_")

    return PreflightSubject(
        model=lambda: build_model(config),         # a fresh WineNet for every check
        loaders=loaders,
        loss=torch.nn.CrossEntropyLoss(),
        num_classes=NUM_CLASSES,
        sample_ids=data.indices,                   # no wine sample in two splits
        evaluate=validate,                         # what the loop logs: val_loss, val_f1, ...
        monitors=["val_loss", "val_f1"],           # what its best checkpoints watch
        accumulate=config.accumulate,
        train_epoch=train_one_epoch,               # our own step loop, accumulation included
    )
