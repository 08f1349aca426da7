"""Ultralytics classify runs trained by Ultralytics itself: OUT/<fault>/.

Runs in a venv where Ultralytics imports (its torchvision needs a torch it was built for:
see ``vision_python`` in tests/conftest.py).  ``YOLO("yolo11n-cls.yaml").train`` -- no
pretrained weights -- on scikit-learn's digits written as 32x32 PNG folders
(``data/train/<class>/``, ``data/val/<class>/``), on the CPU, offline (``YOLO_OFFLINE=1``,
its settings in ``YOLO_CONFIG_DIR``, every integration off: left on, it hooks DVCLive and
writes ``dvc.yaml`` into the working directory), ``plots=False``, ``amp=False``, no
augmentation (a flipped digit is another digit).  It writes results.csv, args.yaml and
weights/best.pt + last.pt (pickles of the whole model).

Faults: healthy; no_best (weights/best.pt deleted after training); nan (every weight set to
NaN as epoch 2 starts: Ultralytics 8.4 reloads last.pt on a NaN loss, and after three tries
stops with an error -- the run dir is what such a run leaves).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

INTEGRATIONS = ("dvc", "wandb", "mlflow", "tensorboard", "clearml", "comet", "neptune", "raytune", "hub")


def write_digits(data: Path) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    for k, i in enumerate(order):
        folder = data / ("val" if k % 5 == 0 else "train") / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        image = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).resize((32, 32)).convert("RGB").save(folder / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--faults", default="healthy,no_best,nan")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ["YOLO_OFFLINE"] = "1"
    out = args.out.resolve()
    data = out / "data"
    write_digits(data)
    import torch
    from ultralytics import YOLO, settings

    torch.set_num_threads(1)
    settings.update({k: False for k in INTEGRATIONS if k in settings})
    for fault in args.faults.split(","):
        model = YOLO("yolo11n-cls.yaml")
        if fault == "nan":
            def poison(trainer: object) -> None:
                if trainer.epoch == 1:  # type: ignore[attr-defined]
                    with torch.no_grad():
                        for p in trainer.model.parameters():  # type: ignore[attr-defined]
                            p.fill_(float("nan"))
            model.add_callback("on_train_epoch_start", poison)
        try:
            model.train(data=str(data), epochs=args.epochs, imgsz=32, batch=32, workers=0, device="cpu",
                        optimizer="Adam", lr0=0.003, warmup_epochs=0, plots=False, amp=False, seed=0,
                        deterministic=True, project=str(out), name=fault, exist_ok=True, verbose=False,
                        auto_augment=None, erasing=0.0, fliplr=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, scale=0.0,
                        translate=0.0, mosaic=0.0)
        except RuntimeError as exc:
            if fault != "nan":
                raise
            print(f"stopped as a NaN run stops: {str(exc).splitlines()[0][:200]}")
        if fault == "no_best":
            (out / fault / "weights" / "best.pt").unlink()
        print(out / fault)


if __name__ == "__main__":
    main()
