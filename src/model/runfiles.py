"""The engine's files of a run dir, as a run writes them: where each lives (:class:`RunPaths`),
config.yaml, splits.json and provenance.json at the start (and on each resume), an
epoch's atomic batch (:func:`epoch_files`), training_results.json, and the plots.

The formats are :mod:`model.runlog`'s (and docs/internals.md's); this module says which
file gets what, and when. A finished run is recognised here too
(:func:`previous_finished_results`), so running it again does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from model import distributed, runlog
from model.checkpoint import atomic_write_text
from model.config import Config, dump_yaml, file_sha256
from model.data import Dataset
from model.runlog import json_text, render_history, write_json
from model.trainstate import TrainState

FINISHED_STATUSES = ("completed", "early_stopped", "aborted_by_gate")

log = logging.getLogger(runlog.LOGGER_NAME)


class RunPaths:
    """Where each file of the run dir contract lives."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.final = self.checkpoints / "final.pt"
        self.results = run_dir / "training_results.json"
        self.provenance = run_dir / "provenance.json"
        self.plots = run_dir / "plots"

    def best(self, metric: str) -> Path:
        return self.checkpoints / f"best_{metric}.pt"


def previous_finished_results(paths: RunPaths) -> dict[str, Any] | None:
    """training_results.json of a run that already finished (and has final.pt), else None."""
    try:
        results = json.loads(paths.results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(results, dict) and results.get("status") in FINISHED_STATUSES \
            and paths.final.is_file():
        return results
    return None


def read_provenance(paths: RunPaths) -> dict[str, Any]:
    """provenance.json of an earlier start of this run dir ({} when there is none)."""
    try:
        previous = json.loads(paths.provenance.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def write_run_files(paths: RunPaths, config: Config, dataset: Dataset,
                    config_path: str | Path | None, argv: list[str] | None, allow_defaults: bool,
                    dist: distributed.DistInfo, previous: dict[str, Any], resumed_at: int | None,
                    tracking: dict[str, Any] | None) -> None:
    """config.yaml, splits.json and provenance.json (kept across resumes, with each resume,
    and the tracked runs the trackers continue on a resume)."""
    atomic_write_text(paths.root / "config.yaml", dump_yaml(config))
    write_json(paths.root / "splits.json", dataset.splits_json())
    if resumed_at is None:
        previous = {}
    now = runlog.utc_now()
    provenance = {
        "entry_point": runlog.entry_point(dist.world_size),
        "argv": list(argv) if argv is not None else list(sys.argv),
        "config_path": str(config_path) if config_path is not None else None,
        "config_sha256": file_sha256(config_path) if config_path is not None else None,
        "resolved_config_sha256": file_sha256(paths.root / "config.yaml"),
        "overrides": overrides_from_argv(argv),
        "git": runlog.git_state(),
        "versions": runlog.versions(),
        "device": dist.device,
        "world_size": dist.world_size,
        "seed": config.seed,
        "start_time": previous.get("start_time", now),
        "end_time": None,
        "allow_defaults": allow_defaults,
        "resumes": [*previous.get("resumes", []),
                    *([{"at_epoch": resumed_at, "time": now}] if resumed_at is not None else [])],
        "tracking": tracking,
    }
    write_json(paths.provenance, provenance)


def overrides_from_argv(argv: list[str] | None) -> list[str]:
    out, args = [], list(argv or [])
    for i, arg in enumerate(args):
        if arg == "--override" and i + 1 < len(args):
            out.append(args[i + 1])
        elif arg.startswith("--override="):
            out.append(arg.split("=", 1)[1])
    return out


def finish_provenance(paths: RunPaths) -> None:
    with contextlib.suppress(OSError, ValueError):
        provenance = json.loads(paths.provenance.read_text(encoding="utf-8"))
        provenance["end_time"] = runlog.utc_now()
        write_json(paths.provenance, provenance)


def write_results(paths: RunPaths, config: Config, state: TrainState, class_names: list[str], *,
                  status: str, reason: str, test: dict[str, float] | None = None) -> dict[str, Any]:
    results = results_dict(config, state, class_names, status=status, reason=reason, test=test)
    write_json(paths.results, results)
    return results


def results_dict(config: Config, state: TrainState, class_names: list[str], *, status: str,
                 reason: str, test: dict[str, float] | None = None) -> dict[str, Any]:
    """The content of training_results.json (docs/internals.md)."""
    es = config.train.early_stopping
    results = {
        "status": status,
        "reason": reason,
        "epochs_completed": state.epoch,
        "epochs_planned": config.train.epochs,
        "monitor": {"metric": es.monitor, "mode": es.mode} if es is not None else None,
        "best": {m: {**b, "checkpoint": f"checkpoints/best_{m}.pt"} for m, b in state.best.items()},
        "final": dict(state.history[-1]) if state.history else None,
        "test": test,
        "class_names": class_names,
    }
    return results


PLOT_FILES = ("loss_curve.png", "recall_curve.png")


def missing_plots(paths: RunPaths) -> list[str]:
    """The plots a finished run lacks: a kill while the plot child drew them loses them,
    and the finished run is not trained again, so the next command must draw them."""
    return [name for name in PLOT_FILES if not (paths.plots / name).is_file()]


def draw_plots(paths: RunPaths, history: list[dict[str, Any]], class_names: list[str]) -> None:
    """plots/*.png, drawn by ``python -m model.plots`` in a child process (see plots.py)."""
    import subprocess

    if not history:
        return
    try:
        proc = subprocess.run([sys.executable, "-m", "model.plots", str(paths.root)],
                              capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not draw plots: %s: %s", exc.__class__.__name__, exc)
        return
    if proc.returncode != 0:  # a plot must never cost a finished run its results
        log.warning("could not draw plots: %s", " ".join(proc.stderr.split())[-300:])


def epoch_files(paths: RunPaths, ckpt: dict[str, Any], columns: list[str], config: Config,
                state: TrainState, newly_best: list[str],
                class_names: list[str]) -> list[tuple[Path, Any]]:
    """This epoch's files, one atomic batch (``write_files_atomically``), in write order:
    ``best_<metric>.pt`` for each metric that improved, ``last.pt``, the logs and
    ``training_results.json``.

    The checkpoint is serialized once; each best file written now is a hard link to this
    epoch's ``last.pt``, whose ``monitor`` names every metric it is the best for. Order
    matters for a kill between two renames: a resume restarts from last.pt and the logs
    are rewritten from its history, so the logs never run ahead of last.pt.
    """
    files: list[tuple[Path, Any]] = [(paths.best(metric), ckpt) for metric in newly_best]
    files.append((paths.last, ckpt))
    files += render_history(paths.root, columns, state.history)
    results = results_dict(config, state, class_names, status="running",
                           reason=f"training, epoch {state.epoch}/{config.train.epochs} done")
    files.append((paths.results, json_text(results).encode("utf-8")))
    return files
