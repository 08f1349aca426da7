"""The image-core probe: can the class be read from the centre of an image alone?

A model that learns "bright centre means lens" scores well on data that has that
shortcut and fails on the sky.  Two measurements use the central disc of an image:

* :func:`core_probe_auc` -- a cross-validated logistic regression on the core pixels
  alone (preflight ``shortcut_probe``, and the first step of the ``shortcut`` gate);
* :func:`fill_core_with_median` -- the core replaced by the median of the rest of each
  band, so a model's score with and without the core can be compared (the ``shortcut``
  gate), or a training run can withhold the core (the bundled engine's ``core_dropout``)::

      >>> core_probe_auc(images, labels, radius=5)        # (N, C, H, W), (N,)
      0.94

numpy is imported with this module; scikit-learn only inside :func:`core_probe_auc`.
Both are affine-invariant per feature (the probe standardises its inputs), so raw and
normalised images give the same answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["DEFAULT_RADIUS", "central_crop_features", "core_mask", "core_probe_auc", "fill_core_with_median"]

#: The default core radius in pixels (the bundled ``stamps`` data's lens core).
DEFAULT_RADIUS = 5.0


@contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """numpy warns on an all-NaN slice; the callers handle that case on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def core_mask(height: int, width: int, radius: float) -> np.ndarray:
    """Boolean (H, W) disc of ``radius`` pixels around the image centre."""
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def fill_core_with_median(images: Any, radius: float) -> np.ndarray:
    """Copy of ``images`` (N, C, H, W) whose central disc holds the median of the rest, per
    band: the class cannot be read from core brightness any more.  NaN outside the core is
    ignored."""
    out = np.array(images, dtype=np.float32, copy=True)
    if out.shape[0] == 0:
        return out
    mask = core_mask(out.shape[2], out.shape[3], radius)
    with _quiet_nan_warnings():
        med = np.nanmedian(out[:, :, ~mask], axis=2)  # (N, C)
    med = np.where(np.isfinite(med), med, 0.0).astype(np.float32)
    out[:, :, mask] = med[:, :, None]
    return out


def central_crop_features(x: Any, radius: float = DEFAULT_RADIUS) -> np.ndarray:
    """(N, C*k) pixels within ``radius`` of the image centre, all bands, flattened: what the
    probe looks at.  If these pixels alone predict the class, a model can too."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"central_crop_features needs images (N, C, H, W), got shape {x.shape}")
    mask = core_mask(x.shape[2], x.shape[3], radius)
    return np.asarray(x[:, :, mask], dtype=np.float32).reshape(len(x), -1)


def core_probe_auc(x: Any, y: Any, radius: float = DEFAULT_RADIUS, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression on the central crop alone.

    Near 0.5: the core carries no class information; well above: a shortcut.  Binary labels
    use the positive (second) class; more classes use macro one-vs-rest.  NaN pixels are
    set to the column mean, so a few bad pixels do not stop the probe.  NaN when there are
    fewer than two classes or a class has fewer than two samples.
    """
    from pytest_mlgates.errors import require_extra

    require_extra("sklearn", "the image-core probe")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = central_crop_features(x, radius).astype(np.float64)
    feats = np.where(np.isfinite(feats), feats, np.nan)
    with _quiet_nan_warnings():
        col_mean = np.nanmean(feats, axis=0)
    col_mean = np.where(np.isfinite(col_mean), col_mean, 0.0)
    feats = np.where(np.isnan(feats), col_mean[None, :], feats)
    y = np.asarray(y).astype(np.int64)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return float("nan")
    folds = int(min(5, counts.min()))
    if folds < 2:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(probe, feats, y, cv=cv, method="predict_proba")
    if len(classes) == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
