"""The engine as a client of pytest-mlgates: its code handed over as a ``PreflightSubject``.

The plugin never imports the engine.  Like any user, the engine describes its model,
loaders, loss and validation pass in a ``mlgates_subject`` fixture; this repository's
root ``conftest.py`` re-exports the one below::

    # conftest.py
    from model.mlgates import mlgates_subject  # noqa: F401

``pytest -m preflight --config C`` then checks config ``C``'s subject, and the acceptance
gates that need the model or the data of an engine run (``checkpoint_softmax`` on real
val samples, ``reproduces``, ``shortcut``) get the subject of the run they judge: its
``config.yaml``, its ``splits.json``, and its checkpoints rebuilt by
:func:`model.nets.model_from_checkpoint` (EMA weights where the run kept them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates import PreflightSubject, SubjectError
from pytest_mlgates.preflight import config_path

__all__ = ["config_subject", "mlgates_subject", "run_subject", "split_fractions_off", "subject_for",
           "tracked_not_chosen"]

_CACHE: dict[tuple[Any, ...], PreflightSubject | None] = {}


def subject_for(config: Any, *, name: str, splits: dict[str, Any] | None = None,
                run_dir: Path | None = None, augment: bool = True) -> PreflightSubject:
    """The subject of a validated engine ``Config``: its model, its real loaders (the train
    loader shuffled, and augmented as in training unless ``augment`` is False), its
    class-weighted loss, its ``evaluate`` and its ``train_one_epoch``.  ``splits`` (a
    ``splits.json``) replaces the split indices."""
    import numpy as np
    import torch

    from model.checks import compute_class_weights
    from model.config import ConfigError
    from model.data import build_dataset
    from model.nets import build_model, model_from_checkpoint

    try:
        dataset = build_dataset(config)
        weights = compute_class_weights(config.train.class_weights, dataset)
    except ConfigError as exc:
        raise SubjectError(str(exc)) from None
    if splits is not None:
        dataset = _with_splits(dataset, splits, name)
    tc, seed = config.train, int(config.seed)
    criterion = torch.nn.CrossEntropyLoss(
        weight=None if weights is None else torch.tensor(weights, dtype=torch.float32))

    def loader(split: str, *, shuffle: bool) -> Any:
        return dataset.loader(split, tc.batch_size, shuffle=shuffle, seed=seed, epoch=1,
                              core_dropout=tc.core_dropout if split == "train" and augment else None,
                              num_workers=config.data.num_workers)

    loaders = {"train": loader("train", shuffle=True), "val": loader("val", shuffle=False)}
    if len(dataset.splits["test"]):
        loaders["test"] = loader("test", shuffle=False)

    def new_model() -> Any:
        return build_model(config.model, dataset.input_shape, dataset.num_classes)

    def evaluate(model: Any) -> dict[str, float]:
        from model.train import evaluate as engine_evaluate

        return engine_evaluate(model, loaders["val"], criterion, list(dataset.class_names), "val",
                               torch.device("cpu"), contextlib.nullcontext())

    monitors = [t.metric for t in config.checkpoint.tracked]
    if tc.early_stopping is not None and tc.early_stopping.monitor not in monitors:
        monitors.append(tc.early_stopping.monitor)
    ids = {s: np.asarray(idx) for s, idx in dataset.splits.items() if len(idx)}
    groups = None if dataset.groups is None else {s: dataset.groups[idx] for s, idx in ids.items()}
    return PreflightSubject(
        model=new_model,
        loaders=loaders,
        loss=criterion,
        num_classes=dataset.num_classes,
        sample_ids=ids,
        groups=groups,
        evaluate=evaluate,
        monitors=monitors,
        accumulate=int(tc.accumulate),
        train_epoch=_train_epoch(config, criterion),
        model_from_checkpoint=model_from_checkpoint,
        run_dir=run_dir,
        name=name,
    )


def _train_epoch(config: Any, criterion: Any) -> Any:
    """The engine's own ``train_one_epoch`` as ``fn(model, loader, optimizer, accumulate)``."""

    def train_epoch(model: Any, loader: Any, optimizer: Any, accumulate: int) -> None:
        import torch

        from model import distributed
        from model.train import train_one_epoch
        from model.trainstate import TrainState

        quiet = config.model_copy(deep=True)
        quiet.train.grad_clip = 0.0
        quiet.train.progress_bar = False
        quiet.train.accumulate = int(accumulate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        train_one_epoch(model, model, None, loader, criterion, optimizer, scheduler, scaler,
                        contextlib.nullcontext(), TrainState.fresh(quiet), quiet, distributed.DistInfo(), 1)

    return train_epoch


def _with_splits(dataset: Any, splits: dict[str, Any], name: str) -> Any:
    """``dataset`` with the split indices of a run's ``splits.json`` (what the run trained on).
    Normalization stays the dataset's own: the statistics the model saw."""
    import dataclasses

    import numpy as np

    out = dict(dataset.splits)
    for split in ("train", "val", "test"):
        ids = splits.get(split)
        if ids is None:
            continue
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise SubjectError(f"{name}: splits.json '{split}' is not a list of integer indices")
        if ids and (min(ids) < 0 or max(ids) >= len(dataset.y)):
            raise SubjectError(f"{name}: splits.json '{split}' has an index outside the dataset "
                               f"(0..{len(dataset.y) - 1})")
        out[split] = np.asarray(ids, dtype=np.int64)
    return dataclasses.replace(dataset, splits=out)


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it (as a user typed it)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def config_subject(path: str | Path) -> PreflightSubject:
    """The subject of the config file at ``path`` (cached while the file is unchanged); a
    config that does not validate is a one-line :class:`SubjectError`."""
    from model.config import ConfigError, load_config

    path = Path(path)
    key = ("config", *_stamp(path))
    if key not in _CACHE:
        try:
            config = load_config(_shown(path))
        except ConfigError as exc:
            raise SubjectError(str(exc)) from None
        _CACHE[key] = subject_for(config, name=f"engine {path.name}",
                                  run_dir=Path("runs") / path.stem)
    subject = _CACHE[key]
    assert subject is not None
    return subject


def run_subject(run_dir: str | Path) -> PreflightSubject | None:
    """The subject of an engine run (its ``config.yaml`` and ``splits.json``; the train
    loader without augmentation), or None when ``run_dir`` is not an engine run (a
    Lightning or HF Trainer dir): the plugin then uses what the gate file names. An engine
    run tracked in MLflow is one too, read through its MLflow run folder
    (``mlruns/.../<run_id>/``): the files are its ``artifacts/``."""
    import json

    import yaml

    from model.config import ConfigError, build_config

    run_dir = Path(run_dir)
    files = run_dir
    if not (run_dir / "config.yaml").is_file() and (run_dir / "artifacts" / "config.yaml").is_file():
        files = run_dir / "artifacts"  # an MLflow run folder: the engine logs its run dir there
    config_file, splits_file = files / "config.yaml", files / "splits.json"
    key = ("run", *_stamp(config_file), *_stamp(splits_file))
    if key in _CACHE:
        return _CACHE[key]
    subject: PreflightSubject | None = None
    try:
        tree = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        tree = None
    if isinstance(tree, dict) and isinstance(tree.get("model"), dict) and isinstance(tree.get("data"), dict):
        try:
            config = build_config(tree, str(config_file))
        except ConfigError as exc:
            raise SubjectError(str(exc)) from None
        splits = None
        if splits_file.is_file() and not splits_file.is_symlink():
            try:
                splits = json.loads(splits_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                splits = None
        # the images as they are: a run dir's config.yaml claiming core_dropout must not hide
        # a shortcut from the gates that look at the data
        subject = subject_for(config, name=f"engine run {run_dir.name}",
                              splits=splits if isinstance(splits, dict) else None, run_dir=run_dir,
                              augment=False)
    _CACHE[key] = subject
    return subject


# --------------------------------------------------------------------------- the engine's own checks
# What only the engine's config can say, run as its preflight tests (tests/test_engine_preflight.py).


def split_fractions_off(config: Any, tolerance: float = 0.05) -> str | None:
    """None when the built splits have the configured ``val_fraction``/``test_fraction``
    (within ``tolerance``); else one line.  A class thinned by ``data.imbalance`` is left
    out of the count: it is meant to be off."""
    import numpy as np

    from model.data import _class_index, build_dataset

    dataset, data = build_dataset(config), config.data
    keep = np.ones(len(dataset.y), dtype=bool)
    note = ""
    if data.imbalance is not None:
        keep = dataset.y != _class_index(data.imbalance.class_, dataset.class_names)
        note = f" (class '{data.imbalance.class_}' thinned by data.imbalance left out)"
    counts = {s: int(keep[dataset.splits[s]].sum()) for s in ("train", "val", "test")}
    total = sum(counts.values())
    wanted = {"val": data.val_fraction, "test": data.test_fraction}
    wanted["train"] = 1.0 - wanted["val"] - wanted["test"]
    got = {s: counts[s] / total if total else 0.0 for s in counts}
    off = [f"{s} {got[s]:.3f} (configured {wanted[s]:.3f})" for s in ("train", "val", "test")
           if abs(got[s] - wanted[s]) > tolerance]
    if off:
        return f"split fractions off by more than {tolerance:g}: {', '.join(off)}{note}"
    return None


def tracked_not_chosen(config: Any, source: str | Path) -> str | None:
    """None when the config names ``checkpoint.tracked`` itself; else one line (the default
    tracks only val_loss, so only best_val_loss.pt would be saved)."""
    if config.uses_default_tracking():
        names = ", ".join(t.metric for t in config.checkpoint.tracked)
        return (f"{source}: checkpoint.tracked is not set, so the default [{names}] applies; name the "
                "metrics you need a best checkpoint for")
    return None


@pytest.fixture
def mlgates_subject(mlgates_run_dir: Path | None, pytestconfig: pytest.Config) -> PreflightSubject | None:
    """The engine's code for the plugin: the subject of the run an acceptance item judges,
    else of ``--config`` (``mlgates_config`` in the ini file) for ``pytest -m preflight``."""
    if mlgates_run_dir is not None:
        return run_subject(mlgates_run_dir)
    path = config_path(pytestconfig)
    return config_subject(path) if path is not None else None
