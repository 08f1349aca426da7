"""A PyTorch Lightning log dir (``lightning_logs/version_N/``), and its ``mlgates prove`` mutations.

What Lightning writes, and where this reader finds each thing the gates need::

    version_N/
      metrics.csv          CSVLogger: train and val rows of one epoch on separate lines,
                           empty cells between; epochs count from 0, and so does the log here
      hparams.yaml         save_hyperparameters() (read with yaml.safe_load)
      checkpoints/*.ckpt   torch.save dicts: state_dict, epoch, global_step, and
                           callbacks: {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', ...}":
                           {monitor, best_model_path, best_model_score, ...}}

The tracked metrics are the monitors of the ``ModelCheckpoint`` callbacks.  Every
checkpoint holds the state of every callback *as it was when that file was saved*; with
several ModelCheckpoints, the file one of them saves (and ``last.ckpt``) holds the others'
state of the epoch before.  So each callback's state is taken from the newest checkpoint
on disk that holds it: highest ``global_step``, then ``epoch``, then the state whose best
file exists, then the file written last.  ``best_model_path`` holds the training machine's
absolute path, so it is resolved by its basename inside the run dir.

A checkpoint's ``epoch`` field counts like the log (from 0) when ModelCheckpoint saved it,
but one more once the epoch loop finished (``trainer.save_checkpoint`` after ``fit``), so
a checkpoint is placed in the log by its ``global_step``: the CSVLogger writes the rows of
an epoch's end at ``step = global_step - 1``.  The ``epoch`` field is used only where no
logged step matches.

``_lightning_csv.py`` reads ``metrics.csv``; ``_lightning_callbacks.py`` the callback states
one checkpoint holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.checkpoint_io import holds_state, resume_kinds
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._lightning_callbacks import callback_entries, whole_or_minus_one
from pytest_mlgates.formats._lightning_csv import parse_lightning_csv, read_lightning_csv
from pytest_mlgates.rundir import BestRecord, Run, best_index, is_checkpoint_alias
from pytest_mlgates.runfiles import MAX_TEXT_BYTES, open_run_file
from pytest_mlgates.runlog import Log
from pytest_mlgates.runvalues import float_or_none, mtime_or_zero, scalar

__all__ = ["IDENTIFIED_BY", "LightningRun", "Mutations", "detect", "locate", "parse_lightning_csv", "read",
           "read_lightning_csv"]

IDENTIFIED_BY = "metrics.csv, hparams.yaml or checkpoints/*.ckpt"
#: TensorBoardLogger writes its event files into the same version_N/ folder.
CONTAINS = ("tensorboard",)


def detect(path: Path) -> list[str]:
    path = Path(path)
    found = [name for name in ("metrics.csv", "hparams.yaml") if (path / name).exists() or (path / name).is_symlink()]
    try:
        if any(p.suffix == ".ckpt" for p in (path / "checkpoints").iterdir()):
            found.append("checkpoints/*.ckpt")
    except OSError:
        pass
    return found


def locate(path: Path) -> Path | None:
    """A Lightning ``save_dir`` or ``lightning_logs`` folder holding exactly one ``version_N``."""
    for base in (path, path / "lightning_logs"):
        try:
            # a symlinked version_N could lead anywhere: the run is what lies in the folder given
            versions = [d for d in base.iterdir()
                        if d.name.startswith("version_") and d.is_dir() and not d.is_symlink()]
        except OSError:
            continue
        if len(versions) == 1:
            return versions[0]
    return None


class LightningRun(Run):
    format = "lightning"
    #: Lightning's record of the run's hyper-parameters
    config_file = "hparams.yaml"

    # -- files ---------------------------------------------------------------------------

    def _read_log(self) -> Log:
        path = self.path / "metrics.csv"
        if not path.exists() and not path.is_symlink():
            raise RunDirError(
                f"{self.shown(path)}: not found (a Lightning run is read from its CSVLogger log; "
                "add CSVLogger, or give the TensorBoard dir with --run-format tensorboard)"
            )
        shown = self.shown(path)
        with open_run_file(self.path, "metrics.csv", shown, limit=MAX_TEXT_BYTES) as stream:
            return read_lightning_csv(stream, shown)

    def checkpoint_files(self) -> list[Path]:
        """Every ``.ckpt`` in ``checkpoints/`` (and the run dir itself), newest first; a
        FIFO or link among them is listed too: opening it says what it is, in one line."""
        found: list[Path] = []
        for folder in (self.path / "checkpoints", self.path):
            try:
                found += [p for p in folder.iterdir() if p.suffix == ".ckpt" and not p.is_dir()]
            except OSError:
                continue
        return sorted(found, key=lambda p: (p.name != "last.ckpt", -mtime_or_zero(p), p.name))

    def _by_basename(self, name: str) -> Path | None:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        for path in self.checkpoint_files():
            if path.name == base:
                return path
        return None

    def _shown_file(self, path: Path) -> str:
        try:
            return self.shown(self.path / path.relative_to(self.path))
        except ValueError:
            return str(path)

    # -- callback state --------------------------------------------------------------------

    def callback_states(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """[(shown file, kind, mode, state)]: each monitoring callback's newest state on disk.

        Every loadable checkpoint is read; per callback key, the state saved with the
        highest (global_step, epoch) wins, then the one whose best file exists, then the
        file written last.  Callbacks come in the order the newest checkpoint lists them."""
        def make() -> list[tuple[str, str, str, dict[str, Any]]]:
            files = self.checkpoint_files()
            if not files:
                raise RunDirError(f"{self.shown(self.path / 'checkpoints')}: no .ckpt files")
            errors: list[str] = []
            best: dict[str, tuple[tuple[int, int, int, int], str, str, str, dict[str, Any]]] = {}
            order: dict[str, tuple[tuple[int, int, int, int], int]] = {}
            loaded = 0
            for path in files:
                shown = self._shown_file(path)
                try:
                    ckpt = self.checkpoint(str(path.relative_to(self.path)))
                except (RunDirError, ValueError) as exc:
                    errors.append(str(exc))
                    continue
                loaded += 1
                step, epoch = whole_or_minus_one(ckpt.get("global_step")), whole_or_minus_one(ckpt.get("epoch"))
                try:
                    mtime = path.stat().st_mtime_ns
                except OSError:
                    mtime = 0
                for position, (key, kind, mode, state) in enumerate(callback_entries(shown, ckpt)):
                    exists = int(self._best_file_exists(state))
                    rank = (step, epoch, exists, mtime)
                    if key not in best or rank > best[key][0]:
                        best[key] = (rank, shown, kind, mode, state)
                    file_rank = (step, epoch, 0, mtime)
                    if key not in order or file_rank > order[key][0]:
                        order[key] = (file_rank, position)
            if not loaded:
                raise RunDirError(errors[0])
            keys = sorted(best, key=lambda k: (tuple(-x for x in order[k][0]), order[k][1]))
            return [(best[k][1], best[k][2], best[k][3], best[k][4]) for k in keys]

        return self._cached("callbacks", make)  # type: ignore[no-any-return]

    def _best_file_exists(self, state: dict[str, Any]) -> bool:
        best = state.get("best_model_path")
        if not isinstance(best, str) or not best.strip() or "\x00" in best:
            return False
        return self._by_basename(best) is not None

    def _state_holder(self, metric: str) -> str:
        """The checkpoint whose ModelCheckpoint(monitor=metric) state is read (for messages)."""
        for shown, kind, _mode, state in self.callback_states():
            if kind == "ModelCheckpoint" and state.get("monitor") == metric:
                return shown
        return self.shown(self.path / "checkpoints")

    def _model_checkpoints(self) -> list[tuple[str, dict[str, Any]]]:
        return [(mode, s) for _shown, kind, mode, s in self.callback_states() if kind == "ModelCheckpoint"]

    @property
    def tracked(self) -> list[tuple[str, str]]:
        """The ModelCheckpoint monitors; a RunDirError when no checkpoint can be read."""
        out: list[tuple[str, str]] = []
        # an unreadable checkpoint raises: the gates then name it, not a missing config
        for mode, state in self._model_checkpoints():
            item = (str(state["monitor"]), mode)
            if item not in out:
                out.append(item)
        return out

    @property
    def monitor(self) -> tuple[str, str]:
        """The first ModelCheckpoint's monitor, else EarlyStopping's, else val_loss."""
        try:
            states = self.callback_states()
        except RunDirError:
            states = []
        for wanted in ("ModelCheckpoint", "EarlyStopping"):
            for _shown, kind, mode, state in states:
                if kind == wanted:
                    return str(state["monitor"]), mode
        return "val_loss", "min"

    @property
    def results(self) -> dict[str, Any] | None:
        return None

    # -- checkpoints -------------------------------------------------------------------------

    def _best_path_for(self, metric: str) -> tuple[Path | None, str, dict[str, Any] | None]:
        """(file, basename, ModelCheckpoint state) of the best checkpoint of ``metric``; a
        RunDirError naming the checkpoint that holds the state when best_model_path is unusable."""
        for _mode, state in self._model_checkpoints():
            if state.get("monitor") != metric:
                continue
            best = state.get("best_model_path")
            if not isinstance(best, str) or not best.strip() or "\x00" in best:
                got = "empty" if best in ("", None) else f"{shown_value(best, 60)} ({type(best).__name__})"
                raise RunDirError(f"{self._state_holder(metric)}: ModelCheckpoint(monitor='{metric}') "
                                  f"best_model_path is {got}, not a checkpoint file")
            base = best.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
            if base in ("", ".", ".."):
                raise RunDirError(f"{self._state_holder(metric)}: ModelCheckpoint(monitor='{metric}') "
                                  f"best_model_path {best[:120]!r} names no checkpoint file")
            return self._by_basename(base), base, state
        return None, "", None

    def _inside(self, path: Path) -> Path:
        """``path`` (found by listing the run dir) after symlinks, refusing one that leaves it."""
        try:
            rel = str(path.relative_to(self.path))
        except ValueError:
            rel = str(path)
        return self.resolve(rel)

    def checkpoint_path(self, name: str) -> Path:
        """``best`` / ``best_<metric>`` (that ModelCheckpoint's best_model_path), ``last`` or
        ``final`` (last.ckpt, else the newest), or a path relative to the run dir."""
        if is_checkpoint_alias(name):
            if name.startswith("best"):
                metric = self.alias_metric(name)
                path, base, state = self._best_path_for(metric)
                if path is not None:
                    return self._inside(path)
                if state is None:
                    monitors = ", ".join(m for m, _ in self.tracked) or "none"
                    raise RunDirError(f"{self.shown(self.path / 'checkpoints')}: no ModelCheckpoint monitors "
                                      f"'{metric}' (monitors: {monitors})")
                raise RunDirError(f"{self.shown(self.path / 'checkpoints' / base)}: not found; "
                                  f"ModelCheckpoint(monitor='{metric}') names it as its best_model_path")
            files = self.checkpoint_files()
            if not files:
                raise RunDirError(f"{self.shown(self.path / 'checkpoints')}: no .ckpt files")
            return self._inside(files[0])
        return self.resolve(name)

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """``last.ckpt`` (else the newest ``.ckpt``): model, optimizer, scheduler and loop
        state, at the epoch of the log its global_step says. Lightning saves no RNG state,
        so a resume is never bit-exact; not required."""
        name = "last"
        shown = self.checkpoint_shown(name)
        ckpt = self.checkpoint(name)
        kinds = resume_kinds(ckpt, shown)
        held: list[str] = []
        missing: list[str] = []
        for kind, present in (("model", "model" in kinds), ("optimizer", "optimizer" in kinds),
                              ("loops", holds_state(ckpt.get("loops")))):
            (held if present else missing).append(kind)
        if "scheduler" in kinds:
            held.append("scheduler")
        return shown, self.log_epoch_of(ckpt), held, missing

    def resume_path(self) -> Path:
        return self.checkpoint_path("last")

    def resume_hint(self, epoch: int | None, last_epoch: int) -> str:
        """A stale ``last.ckpt`` of a healthy run: since Lightning 2.6,
        ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only in an epoch
        where it saves a top-k file, so when the monitor did not improve after ``epoch`` the
        file stays there.  Named only when the log shows exactly that."""
        if epoch is None or epoch >= last_epoch:
            return ""
        try:
            log = self.log
            monitors = [(s.get("monitor"), mode) for mode, s in self._model_checkpoints()]
        except RunDirError:
            return ""
        for metric, mode in monitors:
            if not isinstance(metric, str) or metric not in log.columns or epoch not in log.epochs:
                continue
            best = best_index(log.columns[metric], mode)
            if best is not None and best <= log.epochs.index(epoch):
                return (f"ModelCheckpoint(monitor='{metric}', save_last=True) rewrites last.ckpt only when it "
                        f"saves a top-k file (Lightning >= 2.6), and {metric} did not improve after epoch {epoch}; "
                        "for a resume point every epoch add ModelCheckpoint(monitor=None, save_last=True)")
        return ""

    def log_epoch_of(self, ckpt: Any) -> int | None:
        """The log's epoch of a checkpoint: the row logged at ``global_step - 1`` (the
        CSVLogger's step at an epoch's end), else the checkpoint's own ``epoch`` (from 0,
        like the log, when ModelCheckpoint saved it)."""
        step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            try:
                log = self.log
            except RunDirError:
                log = None
            if log is not None and "step" in log and "epoch" in log:
                import numpy as np

                rows = np.flatnonzero(log.array("step") == step - 1)
                epochs = log.array("epoch")[rows]
                epochs = epochs[np.isfinite(epochs)]
                if epochs.size:
                    return int(epochs[-1])
        return super().log_epoch_of(ckpt)

    def default_checkpoint(self) -> str:
        try:
            tracked = self.tracked
            path = self._best_path_for(tracked[0][0])[0] if tracked else None
        except RunDirError:  # no readable best: the newest checkpoint is still worth opening
            tracked, path = [], None
        if path is not None:
            return f"best_{tracked[0][0]}"
        if self.checkpoint_files():
            return "last"
        raise RunDirError(f"{self.shown(self.path / 'checkpoints')}: no .ckpt files to load")

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        where = self.shown(self.path / "checkpoints")
        try:
            path, base, state = self._best_path_for(metric)
        except RunDirError as exc:
            return BestRecord(metric, where, problem=str(exc))
        if state is None:
            monitors = ", ".join(m for m, _ in self.tracked) or "none"
            return BestRecord(metric, where, problem=f"{where}: no ModelCheckpoint monitors '{metric}' "
                                                    f"(monitors: {monitors}); needs one best checkpoint per tracked metric")
        if path is None:
            shown = self.shown(self.path / "checkpoints" / base) if base else where
            return BestRecord(metric, shown, problem=f"{shown}: not found; ModelCheckpoint(monitor='{metric}') "
                                                    "names it as its best_model_path")
        shown = self._shown_file(path)
        try:
            ckpt = self.checkpoint(str(path.relative_to(self.path)))
        except RunDirError as exc:
            return BestRecord(metric, shown, problem=str(exc), path=path)
        score = scalar(state.get("best_model_score"))
        value = float_or_none(score)
        if value is None and score is not None:
            return BestRecord(metric, shown, problem=(
                f"{self._state_holder(metric)}: ModelCheckpoint(monitor='{metric}') best_model_score "
                f"{shown_value(score, 40)} is not a number"), path=path)
        return BestRecord(metric, shown, epoch=self.log_epoch_of(ckpt), value=value, path=path)






# --------------------------------------------------------------------------- prove


class Mutations(m.Mutations):
    """A Lightning version dir: ``metrics.csv`` (train and val rows of an epoch apart),
    the ModelCheckpoints' best files, ``last.ckpt``."""

    def open_log(self, run: Path) -> m.LogEditor:
        if not (run / "metrics.csv").is_file():
            raise m.MutationError("metrics.csv: not in the run")
        return m.RowsEditor(run / "metrics.csv", key="epoch")


#: the reader: the run class itself
read = LightningRun
