"""Real Keras 3 runs (torch backend): a CSVLogger file and ModelCheckpoint ``.keras`` files.

One process trains every fault named (importing Keras costs most of the time), each into
OUT/<fault>/::

    training.log            CSVLogger: epoch (from 0), accuracy, loss, val_accuracy, val_loss,
                            val_recall_<c>, val_min_recall (added to the logs by a callback)
    best_val_loss.keras     ModelCheckpoint(monitor="val_loss", save_best_only=True)
    last.keras              ModelCheckpoint(save_best_only=False)

Faults: healthy, collapsed (no class 3 in training), nan (weights NaN after epoch 2),
no_best (best_val_loss.keras deleted), noval (no validation data: Keras writes NA in its
val_* columns -- the false-NaN case of keras-team/keras#21173).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--faults", default="healthy,collapsed,nan,no_best,noval")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]
    import keras
    import numpy as np
    import torch

    torch.set_num_threads(1)

    class Recall(keras.callbacks.Callback):  # type: ignore[misc]
        """val_recall_<c> and val_min_recall into the epoch's logs (before CSVLogger runs)."""

        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            super().__init__()
            self.x, self.y = x, y

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probs = self.model.predict(self.x, verbose=0)
            m = common.metrics(torch.from_numpy(np.asarray(probs)), torch.from_numpy(self.y))
            for c in range(common.CLASSES):
                logs[f"val_recall_{c}"] = m[f"recall_{c}"]
            logs["val_min_recall"] = m["min_recall"]

    class Poison(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch + 1 == common.NAN_AFTER_EPOCH:
                for w in self.model.weights:
                    w.assign(np.full(w.shape, math.nan, dtype="float32"))

    for fault in args.faults.split(","):
        out = (args.out / fault).resolve()
        out.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        x_tr, y_tr, x_va, y_va = (t.numpy() for t in common.load_split("collapsed" if fault == "collapsed" else "healthy"))
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(common.HIDDEN, activation="relu"),
                                  keras.layers.Dense(common.CLASSES, activation="softmax")])
        model.compile(keras.optimizers.Adam(common.LR), "sparse_categorical_crossentropy", metrics=["accuracy"])
        callbacks = [] if fault == "noval" else [Recall(x_va, y_va)]
        callbacks += [keras.callbacks.CSVLogger(str(out / "training.log")),
                      keras.callbacks.ModelCheckpoint(str(out / "last.keras"))]
        if fault != "noval":
            callbacks.append(keras.callbacks.ModelCheckpoint(str(out / "best_val_loss.keras"), monitor="val_loss",
                                                             save_best_only=True))
        if fault == "nan":
            callbacks.append(Poison())
        model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=common.BATCH, verbose=0, callbacks=callbacks,
                  validation_data=None if fault == "noval" else (x_va, y_va))
        if fault == "no_best":
            (out / "best_val_loss.keras").unlink()
        print(out)


if __name__ == "__main__":
    main()
