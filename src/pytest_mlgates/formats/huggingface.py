"""A Hugging Face ``Trainer`` output dir, and its ``mlgates prove`` mutations.

What the Trainer writes, and where this reader finds each thing the gates need::

    output_dir/
      trainer_state.json       save_state(): log_history, best_metric, best_global_step,
                               best_model_checkpoint (the training machine's path)
      model.safetensors        save_model() (or pytorch_model.bin; sharded: *.index.json)
      config.json              a PreTrainedModel's config (id2label gives class names)
      training_args.bin        a pickle: never opened
      checkpoint-N/            one per save: model.safetensors, trainer_state.json, ...

Without a top-level ``trainer_state.json`` (no ``save_state()``), the newest
``checkpoint-N/trainer_state.json`` is read.  The Trainer does not write down which metric
``best_metric`` belongs to (``metric_for_best_model`` lives only in ``training_args.bin``),
so the best checkpoint of a metric is the one whose eval entry at ``best_global_step``
holds exactly ``best_metric`` for that metric.

Reading ``trainer_state.json``'s ``log_history`` is ``_hf_state.py``; the ``checkpoint-N/``
folders' weights files are ``_hf_weights.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._hf_state import StateLogEditor, epochs_done, parse_trainer_state
from pytest_mlgates.formats._hf_weights import (
    WEIGHT_FILES,
    checkpoint_step,
    load_weight_file,
    load_weights_dir,
)
from pytest_mlgates.rundir import BestRecord, Run, default_mode, is_checkpoint_alias
from pytest_mlgates.runfiles import read_json_file
from pytest_mlgates.runlog import Log
from pytest_mlgates.runvalues import float_or_none, numbers_close

__all__ = ["IDENTIFIED_BY", "HuggingFaceRun", "Mutations", "detect", "read"]

IDENTIFIED_BY = "trainer_state.json or checkpoint-N/"
#: report_to="tensorboard" writes event files under the output dir (runs/<date>/).
CONTAINS = ("tensorboard",)


def detect(path: Path) -> list[str]:
    path = Path(path)
    state = path / "trainer_state.json"
    found = ["trainer_state.json"] if state.exists() or state.is_symlink() else []
    try:
        if any(checkpoint_step(p.name) is not None and p.is_dir() for p in path.iterdir()):
            found.append("checkpoint-N/")
    except OSError:
        pass
    return found


class HuggingFaceRun(Run):
    format = "huggingface"

    # -- files -----------------------------------------------------------------------------

    def checkpoint_dirs(self) -> list[Path]:
        """``checkpoint-N/`` folders, oldest step first."""
        try:
            found = [p for p in self.path.iterdir() if checkpoint_step(p.name) is not None and p.is_dir()]
        except OSError:
            return []
        return sorted(found, key=lambda p: checkpoint_step(p.name) or 0)

    def _state_path(self) -> Path:
        top = self.path / "trainer_state.json"
        if top.exists() or top.is_symlink():
            return top
        for folder in reversed(self.checkpoint_dirs()):
            if (folder / "trainer_state.json").is_file():
                return folder / "trainer_state.json"
        return top

    @property
    def state(self) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            path = self._state_path()
            data = self.read_json(str(path.relative_to(self.path)))
            if not isinstance(data, dict):
                raise RunDirError(f"{self.shown(path)}: expected a JSON object, got {type(data).__name__}")
            return data

        return self._cached("state", make)  # type: ignore[no-any-return]

    def _read_log(self) -> Log:
        path = self._state_path()
        if not path.exists():
            raise RunDirError(f"{self.shown(path)}: not found (no trainer_state.json at the top or in a checkpoint-N/)")
        return parse_trainer_state(self.state, self.shown(path))

    @property
    def results(self) -> dict[str, Any] | None:
        return None

    @property
    def config(self) -> dict[str, Any] | None:
        def make() -> dict[str, Any] | None:
            path = self.path / "config.json"
            if not (path.exists() or path.is_symlink()):
                return None
            data = self.read_json("config.json")
            return data if isinstance(data, dict) else None

        return self._cached("config", make)

    @property
    def recorded_class_names(self) -> list[str] | None:
        """The model config's ``id2label``, in label order."""
        labels = (self.config or {}).get("id2label")
        if isinstance(labels, dict) and labels:
            try:
                return [labels[k] if isinstance(labels[k], str) else shown_value(labels[k])
                        for k in sorted(labels, key=lambda k: int(k))]
            except (TypeError, ValueError):
                pass
        return None

    # -- best ---------------------------------------------------------------------------------

    def _best_dir(self) -> tuple[Path | None, str | None]:
        """(folder, basename) of ``best_model_checkpoint``, resolved inside the run dir."""
        best = self.state.get("best_model_checkpoint")
        if not isinstance(best, str) or not best.strip():
            return None, None
        base = best.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        if base in ("", ".", "..") or "\x00" in base:
            raise RunDirError(f"{self.shown(self._state_path())}: best_model_checkpoint {best[:120]!r} "
                              "names no checkpoint folder")
        folder = self.resolve(base)  # a symlink out of the run dir is refused, not followed
        return (folder if folder.is_dir() else None), base

    def _best_step(self) -> int | None:
        step = self.state.get("best_global_step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
        _, base = self._best_dir()
        return checkpoint_step(base) if base else None

    def _eval_entry(self, step: int) -> dict[str, Any] | None:
        history = self.state.get("log_history")
        if not isinstance(history, list):
            raise RunDirError(f"{self.shown(self._state_path())}: no 'log_history' list")
        for entry in history:
            if isinstance(entry, dict) and entry.get("step") == step and any(k.startswith("eval_") for k in entry):
                return entry
        return None

    def _best_metric_names(self) -> list[str]:
        """Every eval metric ``best_metric`` may belong to: those whose value at the best
        step equals it.  Several can (F1 and accuracy both 1.0 from epoch 4 on), and the
        Trainer writes ``metric_for_best_model`` down only in ``training_args.bin``, which is
        never opened: each of them is checked by the Trainer's own rule instead (it replaces
        the best only on a strictly better value, ``operator.gt``/``lt``, so a tie keeps the
        first epoch at the best) when ``best_checkpoints`` compares the epoch with the log."""
        raw = self.state.get("best_metric")
        value = float_or_none(raw) if not isinstance(raw, (str, bool)) else None
        if raw is not None and value is None:
            raise RunDirError(f"{self.shown(self._state_path())}: best_metric {shown_value(raw, 40)} "
                              f"is a {type(raw).__name__}, expected a number")
        step = self._best_step()
        if value is None or step is None:
            return []
        entry = self._eval_entry(step) or {}
        return [k for k, v in entry.items() if k not in ("epoch", "step")
                and isinstance(v, (int, float)) and not isinstance(v, bool)
                and numbers_close(float_or_none(v) or math.nan, value)]

    def _first_best_step(self, metric: str, mode: str) -> int | None:
        """The step the Trainer's rule keeps for ``metric``: the first eval at its best value."""
        history = self.state.get("log_history")
        best: tuple[float, int] | None = None
        for entry in history if isinstance(history, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                continue
            raw = entry.get(metric)
            v = float_or_none(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
            if v is None or math.isnan(v):
                continue
            if best is None or (v < best[0] if mode == "min" else v > best[0]):
                best = (v, entry["step"])
        return best[1] if best else None

    def _best_metric_name(self) -> str | None:
        """The metric ``best_metric`` most likely belongs to: of the equal ones, those the
        Trainer's tie rule picks at the best step; ``eval_loss`` first (the default)."""
        names = self._best_metric_names()
        step = self._best_step()
        by_rule = [n for n in names if self._first_best_step(n, default_mode(n)) == step]
        for group in (by_rule, names):
            if "eval_loss" in group:
                return "eval_loss"
            if group:
                return group[0]
        return None

    @property
    def tracked(self) -> list[tuple[str, str]]:
        """The metric of best_metric; a RunDirError when trainer_state.json cannot be read
        (the gates then name it, not a missing config)."""
        name = self._best_metric_name()
        return [(name, default_mode(name))] if name else []

    @property
    def monitor(self) -> tuple[str, str]:
        try:
            tracked = self.tracked
        except RunDirError:
            tracked = []
        return tracked[0] if tracked else ("eval_loss", "min")

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        state_shown = self.shown(self._state_path())
        try:
            folder, base = self._best_dir()
            names = self._best_metric_names()
        except RunDirError as exc:
            return BestRecord(metric, state_shown, problem=str(exc))
        if base is None:
            return BestRecord(metric, state_shown, problem=(
                f"{state_shown}: best_model_checkpoint is null; the Trainer kept no best checkpoint "
                f"(needs metric_for_best_model='{metric}' with a save strategy)"))
        shown = self.shown(self.path / base)
        if metric not in names:
            got = (" and ".join(f"'{n}'" for n in names) if names
                   else "no logged eval metric equal to best_metric "
                        f"{shown_value(self.state.get('best_metric'), 40)}")
            return BestRecord(metric, shown, problem=(
                f"{state_shown}: best_model_checkpoint {base} is the best of {got}, not '{metric}'; "
                "the Trainer keeps one best checkpoint (metric_for_best_model)"))
        if folder is None:
            what = "a file, not a checkpoint folder" if (self.path / base).exists() else "not found"
            return BestRecord(metric, shown, problem=(
                f"{shown}: {what}; {state_shown} names it as best_model_checkpoint"))
        epoch: int | None = None
        inner = folder / "trainer_state.json"
        if inner.exists() or inner.is_symlink():
            try:
                data = read_json_file(inner, self.shown(self.path / base / "trainer_state.json"), root=self.path)
                epoch = epochs_done(data.get("epoch")) if isinstance(data, dict) else None
            except RunDirError as exc:
                return BestRecord(metric, shown, problem=str(exc))
        if epoch is None:
            entry = self._eval_entry(self._best_step() or -1)
            epoch = epochs_done((entry or {}).get("epoch"))
        return BestRecord(metric, shown, epoch=epoch, value=float_or_none(self.state.get("best_metric")), path=folder,
                          step=self._best_step())

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoint_path(self, name: str) -> Path:
        """``best`` / ``best_<metric>`` (best_model_checkpoint), ``last`` (newest checkpoint-N),
        ``final`` (the weights at the top, else the newest checkpoint-N), or a relative path."""
        if is_checkpoint_alias(name):
            if name.startswith("best"):
                folder, base = self._best_dir()
                shown = self.shown(self._state_path())
                if base is None:
                    raise RunDirError(f"{shown}: best_model_checkpoint is null; the Trainer kept no best checkpoint")
                if name != "best" and name[len("best_"):] not in self._best_metric_names():
                    raise RunDirError(f"{shown}: best_model_checkpoint {base} is not the best of '{name[5:]}'")
                if folder is None:
                    raise RunDirError(f"{self.shown(self.path / base)}: not found; {shown} names it as best_model_checkpoint")
                return folder.resolve()
            if name == "final" and any((self.path / f).is_file() for f in WEIGHT_FILES):
                return self.path.resolve()
            dirs = self.checkpoint_dirs()
            if not dirs:
                raise RunDirError(f"{self.shown(self.path)}: no checkpoint-N/ folders and no model weights")
            return self.resolve(dirs[-1].name)  # a checkpoint-N/ linked out of the run is refused
        return self.resolve(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """A checkpoint-N folder (or the output dir) as ``{"state_dict", "epoch", "global_step"}``."""
        path = self.checkpoint_path(name)
        shown = self.checkpoint_shown(name)
        if not path.is_dir():
            return load_weight_file(path, shown, self.path)
        out: dict[str, Any] = {"state_dict": load_weights_dir(path, shown, root=self.path)}
        inner = path / "trainer_state.json"
        if inner.exists() or inner.is_symlink():
            data = read_json_file(inner, f"{shown}/trainer_state.json", root=self.path)
            if isinstance(data, dict):
                epoch = epochs_done(data.get("epoch"))
                if epoch is not None:
                    out["epoch"] = epoch
                if isinstance(data.get("global_step"), int):
                    out["global_step"] = data["global_step"]
        return out

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """The newest ``checkpoint-N/``: weights, ``optimizer.pt``, ``scheduler.pt``,
        ``rng_state.pth`` and ``trainer_state.json`` -- by their presence: the pickles among
        them are never opened."""
        dirs = self.checkpoint_dirs()
        if not dirs:
            raise RunDirError(f"{self.shown(self.path)}: no checkpoint-N/ folder to resume from")
        folder = dirs[-1]
        self.resolve(folder.name)
        shown = self.shown(folder)
        held: list[str] = []
        missing: list[str] = []
        present = {p.name for p in folder.iterdir()}
        for kind, names in (("model", WEIGHT_FILES), ("optimizer", ("optimizer.pt",)),
                            ("scheduler", ("scheduler.pt",)), ("rng", ("rng_state.pth",)),
                            ("trainer state", ("trainer_state.json",))):
            (held if present.intersection(names) else missing).append(kind)
        epoch: int | None = None
        if "trainer_state.json" in present:
            data = read_json_file(folder / "trainer_state.json", f"{shown}/trainer_state.json", root=self.path)
            epoch = epochs_done(data.get("epoch")) if isinstance(data, dict) else None
        return shown, epoch, held, missing

    def resume_path(self) -> Path:
        dirs = self.checkpoint_dirs()
        if not dirs:
            raise RunDirError(f"{self.shown(self.path)}: no checkpoint-N/ folder to resume from")
        return self.resolve(dirs[-1].name)

    def default_checkpoint(self) -> str:
        folder, _ = self._best_dir()
        if folder is not None:
            return "best"
        if any((self.path / f).is_file() for f in WEIGHT_FILES) or self.checkpoint_dirs():
            return "final"
        raise RunDirError(f"{self.shown(self.path)}: no model weights and no checkpoint-N/ to load")



# --------------------------------------------------------------------------- prove


class Mutations(m.Mutations):
    """An HF Trainer output dir: the ``trainer_state.json`` the log is read from, the
    ``checkpoint-N/`` folders (weights, ``optimizer.pt``...)."""

    def open_log(self, run: Path) -> m.LogEditor:
        source = self.run._state_path()  # type: ignore[attr-defined]
        rel = self.rel(source)
        if rel is None:
            raise m.MutationError(f"{source}: outside the run dir")
        return StateLogEditor(run / rel)


#: the reader: the run class itself
read = HuggingFaceRun
