"""Optional experiment tracking: the run's params, metrics and end status in MLflow or W&B.

The run dir stays the source of truth; a tracker mirrors it (rank 0 only)::

    tracking:
      mlflow: {uri: sqlite:///mlflow.db, experiment: digits}
      wandb: {mode: offline, project: digits}

What each tracker gets:

* **params**: the resolved config -- MLflow's params flattened (``train.lr``,
  ``checkpoint.tracked`` as JSON ...), W&B's config as it is (``train: {lr: ...}``);
* **metrics**: every column of ``training_log.csv`` but ``epoch``, once per epoch, with
  ``step = epoch`` (handed over after that epoch's files are on disk; MLflow's on its
  async queue, so the training thread does not wait for the store's disk);
* **the end**: ``mlgates.status`` = ``completed`` | ``early_stopped`` | ``aborted_by_gate``
  | ``failed`` and ``mlgates.reason``; MLflow's run status FINISHED (completed, early
  stopped), KILLED (aborted by a gate) or FAILED; W&B's summary, a tag, and the exit code
  (0, 3 or 1, the engine's own); MLflow also gets the run dir's files as artifacts
  (``checkpoints/best_<metric>.pt`` ...), copied once when the run ends.

A resumed run continues the **same** tracked run: its id is kept in ``provenance.json``
(``tracking``), and MLflow gets the epochs it missed (a kill between an epoch's files and
its metrics) from the history in ``last.pt``. ``--fresh`` starts a new tracked run.

mlflow and wandb are imported only when configured; a missing one is a one-line
:class:`~model.config.ConfigError` naming the package.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from model.config import Config, ConfigError

log = logging.getLogger("model")

# status -> MLflow's run status, W&B's exit code (the engine's own exit codes)
MLFLOW_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED",
                 "aborted_by_gate": "KILLED", "failed": "FAILED"}
EXIT_CODE = {"completed": 0, "early_stopped": 0, "aborted_by_gate": 3, "failed": 1}

# the run dir's files a tracked run gets as artifacts when it ends (never acceptance/)
ARTIFACT_FILES = ("config.yaml", "provenance.json", "splits.json", "training_log.csv",
                  "metric_history.json", "training_results.json", "train.log")
ARTIFACT_DIRS = ("checkpoints", "plots")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.001}}`` -> ``{"train.lr": "0.001"}``; lists and None as JSON."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, str):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


def metric_values(row: dict[str, Any]) -> dict[str, float]:
    """One log row as metrics: every column but ``epoch`` (it is the step)."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}


def check_installed(config: Config) -> None:
    """Refuse, before the run dir is touched, a tracker whose package is not installed."""
    import importlib.util

    for package in ("mlflow", "wandb"):
        if getattr(config.tracking, package) is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(f"tracking.{package}: the '{package}' package is not installed "
                              f"(pip install {package})")


def _import(package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(f"tracking.{package}: the '{package}' package cannot be imported "
                          f"(pip install {package}): {' '.join(str(exc).split())[:200]}") from None


# --------------------------------------------------------------------------- MLflow


class MlflowTracker:
    """One MLflow run, through ``MlflowClient`` (no global active run)."""

    name = "mlflow"

    def __init__(self, settings: Any, config: Config, run_dir: Path,
                 previous: dict[str, Any] | None) -> None:
        mlflow = _import("mlflow")
        from mlflow.entities import Metric, Param

        self._Metric, self._Param = Metric, Param
        self.pending: list[Any] = []  # MLflow's RunOperations of the queued log_batch calls
        self.uri, self.experiment = settings.uri, settings.experiment
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self.run_id = self._same_run(previous)
        if self.run_id is None:
            experiment_id = self._experiment_id()
            run = self.client.create_run(experiment_id, run_name=run_dir.name,
                                         tags={"mlgates.run_dir": str(run_dir.resolve()),
                                               "mlgates.status": "running"})
            self.run_id = run.info.run_id
            log.info("tracking in MLflow: %s, experiment %r, run %s", self.uri, self.experiment,
                     self.run_id)
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "mlgates.status", "running")
            log.info("tracking in MLflow: continuing run %s (%s)", self.run_id, self.uri)
        self._log_params(flatten(config.to_dict()))

    def ids(self) -> dict[str, Any]:
        return {"uri": self.uri, "experiment": self.experiment, "run_id": self.run_id}

    def _same_run(self, previous: dict[str, Any] | None) -> str | None:
        """The run a resumed run dir was tracked in, when it is in this store."""
        if not previous or previous.get("uri") != self.uri \
                or previous.get("experiment") != self.experiment:
            return None
        run_id = str(previous.get("run_id") or "")
        try:
            self.client.get_run(run_id)
        except Exception as exc:  # noqa: BLE001 -- deleted, another store: start a new one
            log.warning("tracking.mlflow: run %s of this run dir is not in %s (%s); starting "
                        "a new MLflow run", run_id, self.uri, " ".join(str(exc).split())[:200])
            return None
        return run_id

    def _experiment_id(self) -> str:
        """The experiment, created with its artifacts beside a SQLite store's database (so
        the store folder holds the whole run; MLflow would put them under the working
        directory's ``mlruns/``, which is the same folder for ``sqlite:///mlflow.db``)."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///"):])
            location = (db.resolve().parent / "mlruns").as_uri()
        return str(self.client.create_experiment(self.experiment, artifact_location=location))

    def _log_params(self, params: dict[str, str]) -> None:
        """Params a resumed run has not logged yet; MLflow refuses to change a param, so a
        value that changed since (``train.epochs``) keeps its first value, with a warning."""
        logged = self.client.get_run(self.run_id).data.params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            log.warning("tracking.mlflow: params changed since run %s started, MLflow keeps "
                        "the first values: %s", self.run_id, ", ".join(changed))
        new = [self._Param(k, v) for k, v in params.items() if k not in logged]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def catch_up(self, history: list[dict[str, Any]]) -> None:
        """Log the epochs of `history` the store does not have (killed before logging)."""
        if not history:
            return
        key = next(iter(metric_values(history[0])), None)
        steps = {m.step for m in self.client.get_metric_history(self.run_id, key)} if key else set()
        for row in history:
            if int(row["epoch"]) not in steps:
                self.log_epoch(row)

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One ``log_batch``, on MLflow's async queue: into SQLite it is one transaction,
        ~10 ms of CPU and ~100 ms of waiting for the disk on a busy machine, which the
        training thread need not wait for (~0.3 ms). A kill loses at most the queued
        epochs, and the resume's :meth:`catch_up` logs them."""
        now, step = int(time.time() * 1000), int(row["epoch"])
        self.pending.append(self.client.log_batch(self.run_id, metrics=[
            self._Metric(k, v, now, step) for k, v in metric_values(row).items()],
            synchronous=False))

    def finish(self, status: str, reason: str, run_dir: Path) -> None:
        while self.pending:  # every epoch is in the store before the run is closed
            self.pending.pop(0).wait()
        self.client.set_tag(self.run_id, "mlgates.status", status)
        self.client.set_tag(self.run_id, "mlgates.reason", reason[:5000])
        for name in ARTIFACT_FILES:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        for folder in ARTIFACT_DIRS:
            if (run_dir / folder).is_dir():
                for path in sorted((run_dir / folder).iterdir()):
                    if path.is_file() and not path.name.startswith("."):
                        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))


# --------------------------------------------------------------------------- W&B


class WandbTracker:
    """One W&B run (``wandb/`` in the run dir; offline unless ``mode: online``)."""

    name = "wandb"

    def __init__(self, settings: Any, config: Config, run_dir: Path,
                 previous: dict[str, Any] | None) -> None:
        wandb = _import("wandb")
        run_id = None
        if previous and previous.get("project") == settings.project:
            run_id = previous.get("id")
        self.mode, self.project = settings.mode, settings.project
        self.run = wandb.init(
            mode=settings.mode, project=settings.project, dir=str(run_dir), name=run_dir.name,
            id=run_id, resume="allow", config=config.to_dict(),
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        log.info("tracking in W&B (%s): run %s%s", settings.mode, self.run.id,
                 " (continued)" if run_id else "")

    def ids(self) -> dict[str, Any]:
        return {"mode": self.mode, "project": self.project, "id": self.run.id}

    def catch_up(self, history: list[dict[str, Any]]) -> None:
        """W&B keeps the steps of a resumed run's earlier part: nothing to send again."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.run.log(metric_values(row), step=int(row["epoch"]))

    def finish(self, status: str, reason: str, run_dir: Path) -> None:
        self.run.summary["mlgates.status"] = status
        self.run.summary["mlgates.reason"] = reason
        self.run.tags = (*[t for t in (self.run.tags or ()) if t not in EXIT_CODE], status)
        self.run.finish(exit_code=EXIT_CODE.get(status, 1))


# --------------------------------------------------------------------------- the engine's side


class Trackers:
    """Every configured tracker; a tracker that fails mid-run is dropped with a warning
    (a tracking server must never cost a training run)."""

    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers

    def ids(self) -> dict[str, Any] | None:
        return {t.name: t.ids() for t in self.trackers} or None

    def _each(self, what: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, what)(*args)
            except Exception as exc:  # noqa: BLE001
                log.warning("tracking.%s: %s failed, tracking stops for this run: %s: %s",
                            tracker.name, what, exc.__class__.__name__,
                            " ".join(str(exc).split())[:300])
                self.trackers.remove(tracker)

    def catch_up(self, history: list[dict[str, Any]]) -> None:
        self._each("catch_up", history)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._each("log_epoch", row)

    def finish(self, status: str, reason: str, run_dir: Path) -> None:
        self._each("finish", status, reason, run_dir)


def open_trackers(config: Config, run_dir: Path, previous: dict[str, Any] | None) -> Trackers:
    """The trackers of ``config.tracking``; `previous` is ``provenance.json``'s ``tracking``
    of a run dir being resumed (its tracked runs are continued). A store that cannot be
    opened stops the launch, in one line: better than a run nobody can find."""
    previous = previous or {}
    trackers: list[Any] = []
    for name, cls in (("mlflow", MlflowTracker), ("wandb", WandbTracker)):
        settings = getattr(config.tracking, name)
        if settings is None:
            continue
        if name == "wandb":
            os.environ.setdefault("WANDB_SILENT", "true")
        try:
            trackers.append(cls(settings, config, run_dir, previous.get(name)))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 -- a bad URI, a locked or foreign store ...
            raise ConfigError(f"tracking.{name}: cannot start tracking ({exc.__class__.__name__}: "
                              f"{' '.join(str(exc).split())[:300]})") from None
    return Trackers(trackers)


__all__ = ["Trackers", "check_installed", "flatten", "metric_values", "open_trackers"]
