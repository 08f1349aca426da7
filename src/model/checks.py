"""What is refused before a run touches its run dir, each in one line.

Built-in defaults without ``--allow-defaults``, a tracked metric or early-stopping monitor
the engine does not log, class weights that do not fit the dataset, a broken in-flight
gate file: :func:`model.train.train` calls these before the first batch.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model import runlog
from model.config import Config, ConfigError
from model.data import Dataset

InflightHook = Callable[[Path, int], "str | None"]

log = logging.getLogger(runlog.LOGGER_NAME)


class TrainSetupError(Exception):
    """A run that must not start (refused defaults, untracked metric ...), in one line."""


def refuse_defaults(config: Config, config_path: str | Path | None, allow_defaults: bool) -> None:
    """The spec's story: a run that silently used the default config saved only one best."""
    if allow_defaults:
        return
    if config_path is None:
        raise TrainSetupError(
            "no --config given: refusing to train on built-in defaults (they track only "
            "val_loss); pass --config FILE, or --allow-defaults if you mean it")
    if config.uses_default_tracking():
        raise TrainSetupError(
            f"{config_path}: checkpoint.tracked is the default (only val_loss), so only "
            "best_val_loss.pt would be saved; list the metrics you need, or pass --allow-defaults")


def check_logged_names(config: Config, columns: list[str]) -> None:
    """Every tracked metric and the early-stopping monitor must be a logged column."""
    loggable = [c for c in columns if c not in ("epoch", "epoch_seconds")]
    named = [(f"checkpoint.tracked: metric '{t.metric}'", t.metric) for t in config.checkpoint.tracked]
    if config.train.early_stopping is not None:
        m = config.train.early_stopping.monitor
        named.append((f"train.early_stopping.monitor: '{m}'", m))
    for what, name in named:
        if name not in loggable:
            close = difflib.get_close_matches(name, loggable, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TrainSetupError(f"{what} is not a column the engine logs for dataset "
                                  f"'{config.data.name}'{hint} (logged: {', '.join(loggable)})")


def compute_class_weights(setting: Any, dataset: Dataset) -> list[float] | None:
    """`none` -> None; `balanced` -> n / (k * count_c) over the train split; a list as given."""
    k = len(dataset.class_names)
    if setting == "none":
        return None
    if setting == "balanced":
        counts = np.bincount(dataset.y[dataset.splits["train"]], minlength=k).astype(np.float64)
        counts = np.maximum(counts, 1.0)
        return [float(v) for v in counts.sum() / (k * counts)]
    weights = [float(w) for w in setting]
    if len(weights) != k:
        raise ConfigError(f"train.class_weights: {len(weights)} weights given but dataset "
                          f"'{dataset.name}' has {k} classes ({', '.join(dataset.class_names)})")
    return weights


def load_inflight_hook(config: Config, run_dir: Path) -> InflightHook | None:
    """The in-flight gates of ``gates.inflight`` (``pytest_mlgates.inflight.Gates``, the
    same class any training loop uses), if that file exists and the plugin is installed;
    otherwise a warning in train.log and no gates.  A broken gate file stops the launch."""
    gates_file = config.gates.inflight
    if not gates_file:
        return None
    if not Path(gates_file).is_file():
        log.warning("gates.inflight: %s not found; training without in-flight gates", gates_file)
        return None
    try:
        from pytest_mlgates.errors import MlgatesError
        from pytest_mlgates.inflight import Gates
    except ImportError as exc:
        log.warning("gates.inflight: in-flight gates unavailable (%s); training without them", exc)
        return None
    try:
        gates = Gates(gates_file, run_dir, after_epoch=config.gates.after_epoch)
    except MlgatesError as err:
        raise ConfigError(f"gates.inflight: {err}") from None

    def hook(_run_dir: Path, epoch: int) -> str | None:
        verdict = gates.check(epoch)
        return verdict.reason if verdict.red else None

    return hook
