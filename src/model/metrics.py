"""Classification metrics in plain numpy, with scikit-learn's conventions.

The engine logs these every epoch, so they must be cheap and must not import
scikit-learn at run time; tests/test_metrics.py checks every number against
scikit-learn on random inputs (ties, absent classes, binary and multiclass)::

    >>> classification_metrics(logits, targets, ["malignant", "benign"])
    {'val_accuracy': 0.95, 'val_macro_f1': 0.94, 'val_auroc': 0.99, 'val_min_recall': 0.9,
     'val_recall_malignant': 0.9, 'val_recall_benign': 0.98,
     'val_support_malignant': 40, 'val_support_benign': 74}

Conventions (those of scikit-learn):

- recall of a class absent from the targets is 0.0 (``zero_division=0``);
- macro F1 averages over *all* classes, F1 = 0 where it is undefined;
- AUROC ties count one half (average ranks). Binary: AUROC of the positive (second)
  class. Multiclass: macro one-vs-rest over the classes that have both positives and
  negatives in the targets; NaN when there is none, or when a score is NaN.
- a row of scores with a NaN predicts no class (counts as wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().to("cpu")
        if getattr(a, "dtype", None) is not None and str(a.dtype) == "torch.bfloat16":
            a = a.float()
        a = a.numpy()
    return np.asarray(a)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float64 (NaN rows stay NaN)."""
    z = logits.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z = z - np.max(z, axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        return False
    return bool(np.all(scores >= 0) and np.all(scores <= 1) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (scipy's rankdata 'average')."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # start of each run of equal values
    new_run = np.empty(len(values), dtype=bool)
    if len(values):
        new_run[0] = True
        new_run[1:] = sorted_vals[1:] != sorted_vals[:-1]
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], len(values))  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def average_ranks_columns(values: np.ndarray) -> np.ndarray:
    """:func:`average_ranks` of each column of an ``(n, k)`` array, in one sort."""
    n, k = values.shape
    order = np.argsort(values, axis=0, kind="mergesort")
    sorted_vals = np.take_along_axis(values, order, axis=0)
    new_run = np.ones((n, k), dtype=bool)
    new_run[1:] = sorted_vals[1:] != sorted_vals[:-1]
    flat = new_run.T.reshape(-1)  # column after column; each column starts a run
    run_id = np.cumsum(flat) - 1
    starts = np.flatnonzero(flat)
    ends = np.append(starts[1:], n * k)  # exclusive
    first_of_column = (starts // n) * n
    mean_rank = (starts - first_of_column + 1 + ends - first_of_column) / 2.0
    ranks = np.empty((n, k), dtype=np.float64)
    np.put_along_axis(ranks, order, mean_rank[run_id].reshape(k, n).T, axis=0)
    return ranks


def binary_auroc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic; NaN if one class is missing or a score is NaN."""
    pos = np.asarray(is_positive, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return float("nan")
    ranks = average_ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(
    logits: Any,
    targets: Any,
    class_names: Sequence[str],
    prefix: str = "val",
    *,
    scores: str = "auto",
) -> dict[str, float]:
    """``<prefix>_accuracy, _macro_f1, _auroc, _min_recall, _recall_<class>`` as floats, and
    ``<prefix>_support_<class>`` (the class's number of samples, the recall's denominator) as ints.

    `logits` is ``(N, C)`` logits or probabilities (torch or numpy); ``scores="auto"``
    treats rows that are already probabilities as such, ``"logits"``/``"probs"`` force it.
    """
    raw = _to_numpy(logits).astype(np.float64)
    y = _to_numpy(targets).astype(np.int64).reshape(-1)
    k = len(class_names)
    if raw.ndim != 2 or raw.shape[1] != k:
        raise ValueError(f"metrics: scores of shape {raw.shape} do not match {k} classes")
    if raw.shape[0] != len(y):
        raise ValueError(f"metrics: {raw.shape[0]} score rows but {len(y)} targets")
    if scores == "probs" or (scores == "auto" and _looks_like_probabilities(raw)):
        probs = raw
    elif scores in ("logits", "auto"):
        probs = softmax(raw)
    else:
        raise ValueError(f"metrics: scores must be auto, logits or probs, got {scores!r}")

    bad_row = np.isnan(raw).any(axis=1)
    pred = np.where(bad_row, -1, np.argmax(np.where(np.isnan(raw), -np.inf, raw), axis=1)) if len(y) else y

    # per-class counts in one pass each (bincount), not a loop over classes: the engine
    # computes these every epoch. Counts are exact in float64, so every number is the one
    # a per-class loop gives, bit for bit (tests/test_metrics.py checks).
    in_range = (y >= 0) & (y < k)
    yk = y[in_range]
    hit = pred[in_range] == yk
    tp = np.bincount(yk[hit], minlength=k)[:k].astype(np.float64)
    support = np.bincount(yk, minlength=k)[:k].astype(np.float64)
    predicted = np.bincount(pred[(pred >= 0) & (pred < k)], minlength=k)[:k].astype(np.float64)
    fp = predicted - tp
    fn = support - tp
    recall_arr = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = 2 * tp + fp + fn
    f1_arr = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    recalls = [float(r) for r in recall_arr]

    out: dict[str, float] = {
        f"{prefix}_accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
        f"{prefix}_macro_f1": float(np.mean(f1_arr)),
        f"{prefix}_auroc": _auroc(probs, y, k),
        f"{prefix}_min_recall": float(min(recalls)),
    }
    for name, r in zip(class_names, recalls):
        out[f"{prefix}_recall_{name}"] = float(r)
    # the counts behind each recall (how many samples of the class the split holds), so a
    # gate can weigh a recall by its sample size: 1.0 on 3 samples is not 1.0 on 300
    for name, s in zip(class_names, support):
        out[f"{prefix}_support_{name}"] = int(s)
    return out


def _auroc(probs: np.ndarray, y: np.ndarray, k: int) -> float:
    if len(y) == 0 or np.isnan(probs).any():
        return float("nan")
    if k == 2:
        return binary_auroc(y == 1, probs[:, 1])
    # one-vs-rest for every class at once: the binary_auroc of each column, without a loop
    ranks = average_ranks_columns(probs)
    pos = y[:, None] == np.arange(k)
    n_pos = pos.sum(axis=0)
    n_neg = len(y) - n_pos
    defined = (n_pos > 0) & (n_neg > 0)
    if not defined.any():
        return float("nan")
    rank_sums = np.where(pos, ranks, 0.0).sum(axis=0)  # half-integers: exact in any order
    n_pos, n_neg, rank_sums = n_pos[defined], n_neg[defined], rank_sums[defined]
    per_class = (rank_sums - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return float(np.mean(per_class))
