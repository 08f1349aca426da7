"""The project's own unit tests: they run beside the gates, with pytest-mlgates installed."""

from __future__ import annotations

import math
from pathlib import Path

import torch

import model
from wine.data import NUM_CLASSES, NUM_FEATURES, load_data


def test_model_is_this_projects_module() -> None:
    # an installed package named `model` would take this name; none may
    assert Path(model.__file__).resolve() == Path(__file__).resolve().parents[1] / "model.py"


def test_build_model_gives_one_logit_per_class() -> None:
    net = model.build_model()
    assert net(torch.zeros(4, NUM_FEATURES)).shape == (4, NUM_CLASSES)


def test_evaluate_reports_nan_for_nan_logits() -> None:
    logits = torch.full((3, NUM_CLASSES), math.nan)
    metrics = model.evaluate(logits, torch.tensor([0, 1, 2]))
    assert all(math.isnan(v) for v in metrics.values())


def test_splits_are_disjoint_and_dropping_a_class_touches_train_only() -> None:
    data = load_data(drop_class=2)
    train, val, test = (set(data.indices[s]) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert 2 not in data.y["train"].tolist()
    assert 2 in data.y["val"].tolist() and 2 in data.y["test"].tolist()
