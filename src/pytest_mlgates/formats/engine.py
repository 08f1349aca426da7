"""The bundled engine's run dir (``python -m model train``), and its ``mlgates prove`` mutations.

What the engine writes (``docs/internals.md`` has every column and key)::

    runs/x/
      training_log.csv        one row per epoch, epochs from 1, every cell a number
      metric_history.json     the same numbers as JSON
      training_results.json   status, best epoch and value per tracked metric, final row
      config.yaml             the resolved config (checkpoint.tracked, early stopping)
      provenance.json  splits.json  plots/*.png
      checkpoints/best_<metric>.pt  final.pt  last.pt   (monitor, epoch, model, ...)

A run is the engine's when it holds ``training_log.csv``, ``training_results.json`` or
``metric_history.json``: the engine writes all three and no other trainer writes any.
``splits.json``, ``config.yaml`` or ``checkpoints/`` alone say nothing: other trainers'
runs hold such files too.  The two logs are parsed by ``_engine_logs.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_names, shown_value
from pytest_mlgates.checkpoint_io import checkpoint_monitors
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._engine_logs import (
    parse_engine_csv,
    parse_metric_history,
    read_engine_csv,
)
from pytest_mlgates.gates.rebuild import checkpoint_name
from pytest_mlgates.rundir import BestRecord, Run, default_mode
from pytest_mlgates.runfiles import MAX_TEXT_BYTES, open_run_file
from pytest_mlgates.runlog import Log
from pytest_mlgates.runvalues import float_or_none

__all__ = ["IDENTIFIED_BY", "EngineRun", "Mutations", "detect", "parse_engine_csv", "parse_metric_history", "read",
           "read_engine_csv"]

DEFINING = ("training_log.csv", "training_results.json", "metric_history.json")
IDENTIFIED_BY = "training_log.csv, training_results.json or metric_history.json"


def detect(path: Path) -> list[str]:
    """By name (a directory or a broken link of that name counts: the reader says what is wrong)."""
    names = _names(Path(path))
    return [name for name in DEFINING if name in names]


def _names(path: Path) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


# --------------------------------------------------------------------------- the reader


class EngineRun(Run):
    """The engine's layout; also the checkpoint layout of MLflow artifacts and TensorBoard
    runs that save ``checkpoints/best_<metric>.pt`` the engine's way."""

    format = "engine"
    config_file = "config.yaml"

    @property
    def results(self) -> dict[str, Any] | None:
        return self._cached("results", lambda: self._optional_object("training_results.json"))

    @property
    def provenance(self) -> dict[str, Any] | None:
        return self._cached("provenance", lambda: self._optional_object("provenance.json"))

    def _read_log(self) -> Log:
        for name, parse in (("training_log.csv", "csv"), ("metric_history.json", "json")):
            path = self.path / name
            if not path.exists() and not path.is_symlink():
                continue
            shown = self.shown(path)
            if parse == "csv":
                with open_run_file(self.path, name, shown, limit=MAX_TEXT_BYTES) as stream:
                    return read_engine_csv(stream, shown)
            return parse_metric_history(self.read_json(name), shown)
        raise RunDirError(f"{self.shown(self.path / 'training_log.csv')}: not found (no training log in the run dir)")

    def metric_history(self) -> Log | None:
        """``metric_history.json`` on its own (None when absent), to compare with the CSV."""
        def make() -> Log | None:
            data = self._optional_json("metric_history.json")
            if data is None:
                return None
            return parse_metric_history(data, self.shown(self.path / "metric_history.json"))

        return self._cached("metric_history", make)  # type: ignore[no-any-return]

    @property
    def monitor(self) -> tuple[str, str]:
        """(metric, mode) that defines "best": results, else config early stopping, else val_loss."""
        results = self.results or {}
        mon = results.get("monitor")
        if isinstance(mon, dict) and isinstance(mon.get("metric"), str):
            mode = mon.get("mode")
            return mon["metric"], mode if mode in ("min", "max") else default_mode(mon["metric"])
        cfg = self.config or {}
        es = (cfg.get("train") or {}).get("early_stopping") if isinstance(cfg.get("train"), dict) else None
        if isinstance(es, dict) and isinstance(es.get("monitor"), str):
            mode = es.get("mode")
            return es["monitor"], mode if mode in ("min", "max") else default_mode(es["monitor"])
        return "val_loss", "min"

    @property
    def recorded_class_names(self) -> list[str] | None:
        """Class names from training_results.json, else a checkpoint."""
        names = (self.results or {}).get("class_names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return list(names)
        for rel in ("checkpoints/final.pt", "checkpoints/last.pt"):
            if (self.path / rel).is_file():
                try:
                    names = self.checkpoint(rel).get("class_names")
                except RunDirError:
                    continue
                if isinstance(names, list) and names and all(isinstance(n, (str, int)) for n in names[:10_000]):
                    return [n if isinstance(n, str) else shown_value(n) for n in names[:10_000]]
        return None

    @property
    def tracked(self) -> list[tuple[str, str]]:
        """(metric, mode) of every tracked best checkpoint: config, else results' ``best``."""
        cfg = self.config or {}
        tracked = (cfg.get("checkpoint") or {}).get("tracked") if isinstance(cfg.get("checkpoint"), dict) else None
        out: list[tuple[str, str]] = []
        if isinstance(tracked, list):
            for t in tracked:
                if isinstance(t, dict) and isinstance(t.get("metric"), str):
                    mode = t.get("mode")
                    out.append((t["metric"], mode if mode in ("min", "max") else default_mode(t["metric"])))
        if out:
            return out
        best = (self.results or {}).get("best")
        if isinstance(best, dict):
            for metric, info in best.items():
                mode = info.get("mode") if isinstance(info, dict) else None
                out.append((str(metric), mode if mode in ("min", "max") else default_mode(str(metric))))
        return out

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint_path(self, name: str) -> Path:
        """``best_val_loss`` / ``final`` / ``last`` / ``best`` (the monitor's) or a relative path."""
        if name == "best":
            name = f"best_{self.monitor[0]}"
        if "/" not in name and "\\" not in name and not name.endswith((".pt", ".pth", ".ckpt", ".bin")):
            name = f"checkpoints/{name}.pt"
        return self.resolve(name)

    def default_checkpoint(self) -> str:
        """The first tracked metric's best, else final, else last."""
        for metric, _ in self.tracked[:1]:
            if (self.path / "checkpoints" / f"best_{metric}.pt").exists():
                return f"best_{metric}"
        for name in ("final", "last"):
            if (self.path / "checkpoints" / f"{name}.pt").exists():
                return name
        raise RunDirError(f"{self.shown(self.path / 'checkpoints')}: no best_*.pt, final.pt or last.pt to load")

    def resume_path(self) -> Path:
        return self.resolve("checkpoints/last.pt")

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        """``checkpoints/best_<metric>.pt`` and the epoch and value its ``monitor`` records."""
        found = self.load_best(metric, f"checkpoints/best_{metric}.pt",
                               f"needs one best checkpoint per tracked metric ({metric}, {mode})")
        if isinstance(found, BestRecord):
            return found
        shown, path, ckpt = found
        monitors = checkpoint_monitors(ckpt)
        if metric not in monitors:
            got = shown_names(monitors) if monitors else "no metric"
            return BestRecord(metric, shown, problem=f"{shown}: monitor names {got}; needs '{metric}'", path=path)
        return BestRecord(metric, shown, epoch=self.log_epoch_of(ckpt),
                          value=float_or_none(monitors[metric].get("value")), path=path)




# --------------------------------------------------------------------------- prove

LOG_CSV = "training_log.csv"
HISTORY_JSON = "metric_history.json"


def _json_number(cell: Any) -> Any:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return cell
    if math.isnan(value):
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    text = str(cell)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


class EngineLogEditor(m.RowsEditor):
    """training_log.csv, saved with metric_history.json (the same numbers) and
    training_results.json's ``final`` (the last row) kept in step."""

    def __init__(self, run: Path) -> None:
        self.run = run
        if not (run / LOG_CSV).is_file():
            raise m.MutationError(f"{LOG_CSV}: not in the run")
        super().__init__(run / LOG_CSV)

    def save(self) -> None:
        super().save()
        columns = self.header
        if (self.run / HISTORY_JSON).exists():
            rows = [{c: _json_number(row.get(c, "")) for c in columns} for row in self.rows]
            (self.run / HISTORY_JSON).write_text(json.dumps({"columns": columns, "rows": rows}), encoding="utf-8")
        path = self.run / "training_results.json"
        if not path.exists() or not self.rows:
            return
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return
        if isinstance(results, dict) and isinstance(results.get("final"), dict):
            for column, cell in self.rows[-1].items():
                if column in results["final"]:
                    number = _json_number(cell)
                    results["final"][column] = number if not isinstance(number, str) else None
            path.write_text(json.dumps(results, indent=2), encoding="utf-8")


def drop_last_row(run: Path) -> None:
    """Only the CSV loses its row: the log is incomplete and disagrees with the JSON."""
    editor = m.RowsEditor(run / LOG_CSV)
    editor.rows = editor.rows[:-1]
    m.RowsEditor.save(editor)


def _best_files(run: Path, names: list[str] | None) -> list[Path]:
    folder = run / "checkpoints"
    if names:
        return [folder / n if n.endswith((".pt", ".ckpt")) else folder / f"{n}.pt" for n in names]
    return sorted(folder.glob("best_*.pt"))


def _own_monitor(ckpt: Any, path: Path) -> tuple[str, dict[str, Any] | None]:
    """The metric ``best_<metric>.pt`` is named for, and its (mutable) monitor record in the
    checkpoint: ``monitor[metric]`` (model-checkpoint/2) or ``monitor`` itself (/1)."""
    monitors = checkpoint_monitors(ckpt)
    for metric, record in monitors.items():
        if record.get("metric") == metric:  # model-checkpoint/1: the one record names its metric
            return metric, record
    metric = path.stem[len("best_"):] if path.stem.startswith("best_") else ""
    return metric, monitors.get(metric)


def perturb_monitor(names: list[str] | None) -> Any:
    """The value a best checkpoint says it was best at moves by 0.5 (log untouched)."""
    def apply(run: Path) -> None:
        import torch

        done = 0
        for path in _best_files(run, names):
            if not path.exists():
                continue
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            metric, record = _own_monitor(ckpt, path)
            if record is not None and isinstance(record.get("value"), (int, float)):
                record["value"] = float(record["value"]) + 0.5
                metrics = ckpt.get("metrics")
                if isinstance(metrics, dict) and metric in metrics:
                    metrics[metric] = float(metrics[metric]) + 0.5
                done += 1
            torch.save(ckpt, path)
        if not done:
            raise m.MutationError("no best checkpoint with a monitor value to move")

    return apply


def perturb_logged_best(names: list[str] | None) -> Any:
    """The log's value of each best checkpoint's metric, at that checkpoint's epoch, moves
    by 0.5: re-evaluating the checkpoint no longer reproduces what was logged."""
    def apply(run: Path) -> None:
        import torch

        changes: list[tuple[str, int]] = []
        for path in _best_files(run, names):
            if not path.exists():
                continue
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            metric, record = _own_monitor(ckpt, path)
            if record is not None and isinstance(ckpt.get("epoch"), int):
                changes.append((metric, int(ckpt["epoch"])))
        editor = EngineLogEditor(run)
        done = 0
        for metric, epoch in changes:
            for handle in editor.cells(metric) if metric in editor.columns() else []:
                if float(handle) == epoch:
                    editor.set(metric, handle, editor.get(metric, handle) + 0.5)
                    done += 1
        if not done:
            raise m.MutationError("no logged value of a best checkpoint's metric to move")
        editor.save()

    return apply


class Mutations(m.Mutations):
    """The engine's files: the log with its JSON twin, ``checkpoints/*.pt``, plots, config."""

    def open_log(self, run: Path) -> m.LogEditor:
        return EngineLogEditor(run)

    def gate_log_complete(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        return [m.Mutation("log_complete", f"last row of {LOG_CSV} dropped", drop_last_row)], ""

    def gate_checkpoint_softmax(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        chosen = params.get("checkpoint")
        if chosen:
            rel = self.rel(self.run.checkpoint_path(checkpoint_name(self, params)))
            rels = [rel] if rel else []
        else:  # the default checkpoint is the first tracked best: every one, to be sure
            rels = [p.relative_to(self.root).as_posix() for p in sorted((self.root / "checkpoints").glob("*.pt"))]
        if not rels:
            return [], "no mutation: no checkpoint in the run to set to NaN"
        what = ", ".join(rels) if chosen else "every checkpoint"
        return [m.Mutation(f"nan_weights:{','.join(rels)}", f"model weights of {what} set to NaN",
                           m.nan_weights(rels, extra_keys=("ema",)))], ""

    def gate_reproduces(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        chosen = m.as_names(params.get("checkpoint")) or None
        rels = [p.relative_to(self.root).as_posix() for p in _best_files(self.root, chosen) if p.exists()]
        return [m.Mutation(f"logged_best:{chosen}", "the logged value of each best checkpoint's "
                           "metric at its epoch moved by 0.5", perturb_logged_best(chosen)),
                m.Mutation(f"monitor:{chosen}", "the stored monitor value of the best "
                           "checkpoint(s) moved by 0.5", perturb_monitor(chosen)),
                m.Mutation(f"nan_weights:{chosen}", "weights set to NaN",
                           m.nan_weights(rels, extra_keys=("ema",)))], ""

    def gate_plots(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        files = m.as_names(params.get("files")) or ["plots/loss_curve.png"]
        return [m.Mutation(f"truncate:{files[0]}", f"{files[0]} truncated to 40 bytes",
                           m.truncate(files[0], lambda size: min(size, 40))),
                m.Mutation(f"remove:{files[0]}", f"{files[0]} deleted", m.remove(files[0]))], ""

    def gate_provenance(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        return [m.Mutation("edit:config.yaml", "config.yaml edited after the run",
                           m.append_text("config.yaml", "\n# edited after the run\nedited: 1\n"))], ""


#: the reader: the run class itself
read = EngineRun
