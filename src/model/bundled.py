"""The two datasets scikit-learn ships that the engine trains on, ``digits`` and
``breast_cancer``, as ``(x, y, groups, class names)``.

They are read from scikit-learn's own bundled files, where scikit-learn keeps them,
without importing scikit-learn: that import (and scipy behind it) costs ~2 s of every
engine start on the dev machine, for two small CSV files. The parsing is the one
``sklearn.datasets`` does; where the files are not found (another layout), or are not
the shape they have been for a decade, ``sklearn.datasets`` loads them.
``tests/test_data.py`` checks both ways give the same arrays, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["load_breast_cancer", "load_digits"]

_SKLEARN_FILES = {"digits": "digits.csv.gz", "breast_cancer": "breast_cancer.csv"}


def _sklearn_data_file(name: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / _SKLEARN_FILES[name]
    return path if path.is_file() else None


def load_digits() -> tuple[np.ndarray, np.ndarray, None, list[str]]:
    path = _sklearn_data_file("digits")
    table = None
    if path is not None:  # what sklearn's load_digits parses: 64 pixels (0..16) and the digit
        import gzip

        with gzip.open(path, mode="rt", encoding="utf-8") as fh:
            table = np.loadtxt(fh, delimiter=",")
    if table is None or table.shape != (1797, 65):
        from sklearn.datasets import load_digits as sklearn_load_digits

        bunch = sklearn_load_digits()
        images, target = bunch.images, bunch.target
    else:
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]
    return np.ascontiguousarray(x), target.astype(np.int64), None, [str(i) for i in range(10)]


def load_breast_cancer() -> tuple[np.ndarray, np.ndarray, None, list[str]]:
    path = _sklearn_data_file("breast_cancer")
    if path is not None:  # what sklearn's load_csv_data parses: "569,30,malignant,benign", rows
        import csv

        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        head = rows[0] if rows else []
        if len(head) == 4 and head[:2] == ["569", "30"] and len(rows) == 570:
            table = np.array(rows[1:], dtype=np.float64)
            return (table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64), None,
                    [str(n) for n in head[2:]])
    from sklearn.datasets import load_breast_cancer as sklearn_load_breast_cancer

    bunch = sklearn_load_breast_cancer()
    names = [str(n) for n in bunch.target_names]
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), None, names
