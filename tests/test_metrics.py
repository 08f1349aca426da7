"""Every metric the engine logs equals scikit-learn's, on random inputs.

Hypothesis draws scores with many ties (small integer grids), targets that may miss a
class, binary and multiclass problems; each property compares one number with the
scikit-learn function the docs promise it equals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from model.metrics import (
    average_ranks,
    average_ranks_columns,
    binary_auroc,
    classification_metrics,
    softmax,
)


@st.composite
def problems(draw: st.DrawFn, min_classes: int = 2, max_classes: int = 5) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(logits, targets, class names); logits on a coarse grid so ties are common."""
    k = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, 40))
    grid = draw(st.sampled_from([1, 2, 4, 100]))
    logits = draw(st.lists(st.lists(st.integers(-3 * grid, 3 * grid), min_size=k, max_size=k), min_size=n, max_size=n))
    present = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    targets = draw(st.lists(st.sampled_from(present), min_size=n, max_size=n))
    names = [f"c{i}" for i in range(k)]
    return np.asarray(logits, dtype=np.float64) / grid, np.asarray(targets, dtype=np.int64), names


@settings(max_examples=100, deadline=None)
@given(problems())
def test_accuracy_recall_f1_equal_sklearn(problem: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    logits, y, names = problem
    labels = list(range(len(names)))
    pred = np.argmax(logits, axis=1)
    got = classification_metrics(logits, y, names)
    assert got["val_accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert got["val_macro_f1"] == pytest.approx(
        f1_score(y, pred, average="macro", labels=labels, zero_division=0), abs=1e-12
    )
    recalls = recall_score(y, pred, average=None, labels=labels, zero_division=0)
    for name, r in zip(names, recalls):
        assert got[f"val_recall_{name}"] == pytest.approx(r, abs=1e-12)
    assert got["val_min_recall"] == pytest.approx(min(recalls), abs=1e-12)
    support = np.bincount(y, minlength=len(names))
    for name, n in zip(names, support):  # the recall's denominator, an int
        assert got[f"val_support_{name}"] == int(n) and type(got[f"val_support_{name}"]) is int


@settings(max_examples=100, deadline=None)
@given(problems(min_classes=2, max_classes=2))
def test_binary_auroc_equals_sklearn_on_positive_class(problem: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    logits, y, names = problem
    got = classification_metrics(logits, y, names)["val_auroc"]
    if len(np.unique(y)) < 2:
        assert math.isnan(got)  # sklearn refuses: "Only one class present in y_true"
        return
    probs = softmax(logits)
    assert got == pytest.approx(roc_auc_score(y, probs[:, 1]), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(problems(min_classes=3, max_classes=5))
def test_multiclass_auroc_is_macro_ovr_like_sklearn(problem: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    logits, y, names = problem
    probs = softmax(logits)
    got = classification_metrics(logits, y, names)["val_auroc"]
    present = np.unique(y)
    if len(present) == len(names):
        want = roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(len(names))))
    else:  # sklearn needs every class; we average the classes that have positives and negatives
        per_class = [roc_auc_score(y == c, probs[:, c]) for c in present if 0 < np.sum(y == c) < len(y)]
        want = float(np.mean(per_class)) if per_class else float("nan")
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_average_ranks_match_scipy_convention(values: list[int]) -> None:
    from scipy.stats import rankdata

    arr = np.asarray(values, dtype=np.float64)
    np.testing.assert_allclose(average_ranks(arr), rankdata(arr, method="average"))


def test_probabilities_are_used_as_given_and_torch_inputs_work() -> None:
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    y = np.array([0, 1, 1, 0])
    from_probs = classification_metrics(torch.tensor(probs), torch.tensor(y), ["a", "b"], prefix="test")
    assert from_probs["test_auroc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert from_probs["test_accuracy"] == pytest.approx(0.5)
    assert set(from_probs) == {
        "test_accuracy", "test_macro_f1", "test_auroc", "test_min_recall", "test_recall_a", "test_recall_b",
        "test_support_a", "test_support_b",
    }
    assert (from_probs["test_support_a"], from_probs["test_support_b"]) == (2, 2)


def test_nan_scores_give_nan_auroc_and_count_as_wrong() -> None:
    logits = np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 0.0], [0.0, 2.0]])
    y = np.array([1, 0, 0, 1])
    got = classification_metrics(logits, y, ["nonlens", "lens"])
    assert math.isnan(got["val_auroc"])
    assert got["val_accuracy"] == pytest.approx(0.75)
    assert got["val_recall_nonlens"] == pytest.approx(0.5)


def test_absent_class_has_recall_zero_and_drags_min_recall() -> None:
    logits = np.eye(3)[[0, 1, 0, 1]] * 5
    got = classification_metrics(logits, np.array([0, 1, 0, 1]), ["x", "y", "z"])
    assert got["val_recall_z"] == 0.0
    assert got["val_min_recall"] == 0.0
    assert got["val_accuracy"] == 1.0


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="do not match 3 classes"):
        classification_metrics(np.zeros((4, 2)), np.zeros(4), ["a", "b", "c"])


def test_binary_auroc_of_constant_scores_is_one_half() -> None:
    assert binary_auroc(np.array([1, 0, 1, 0], dtype=bool), np.zeros(4)) == 0.5


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30).flatmap(lambda n: st.lists(
    st.lists(st.integers(0, 4), min_size=n, max_size=n), min_size=1, max_size=6)))
def test_column_ranks_are_each_columns_ranks(columns: list[list[int]]) -> None:
    values = np.asarray(columns, dtype=np.float64).T  # (n, k)
    got = average_ranks_columns(values)
    for c in range(values.shape[1]):
        assert np.array_equal(got[:, c], average_ranks(values[:, c])), c


def _metrics_one_class_at_a_time(logits: np.ndarray, y: np.ndarray, k: int) -> dict[str, float]:
    """The plain per-class loop the engine's vectorized metrics must equal bit for bit (the
    gates compare re-evaluated values with logged ones at 1e-9)."""
    probs = softmax(logits)
    pred = np.argmax(logits, axis=1)
    recalls, f1s, aucs = [], [], []
    for c in range(k):
        tp = float(np.sum((y == c) & (pred == c)))
        support = float(np.sum(y == c))
        fp = float(np.sum((pred == c) & (y != c)))
        fn = support - tp
        recalls.append(tp / support if support > 0 else 0.0)
        f1s.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else 0.0)
        auc = binary_auroc(y == c, probs[:, c])
        if not math.isnan(auc):
            aucs.append(auc)
    return {"macro_f1": float(np.mean(f1s)), "min_recall": min(recalls),
            "auroc": float(np.mean(aucs)) if aucs else math.nan,
            **{f"recall_c{c}": r for c, r in enumerate(recalls)}}


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(problems(min_classes=3, max_classes=12))
def test_vectorized_metrics_equal_the_per_class_loop_exactly(
        problem: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    logits, y, names = problem
    got = classification_metrics(logits, y, names)
    want = _metrics_one_class_at_a_time(logits, y, len(names))
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[f"val_{key}"]), key
        else:
            assert got[f"val_{key}"] == value, key  # exactly, not approximately
