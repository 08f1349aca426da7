"""A PyTorch Lightning log dir (``lightning_logs/version_N/``).

What Lightning writes, and where this reader finds each thing the gates need::

    version_N/
      metrics.csv          CSVLogger: train and val rows of one epoch on separate lines,
                           empty cells between; epochs count from 0 (the log here from 1)
      hparams.yaml         save_hyperparameters() (read with yaml.safe_load)
      checkpoints/*.ckpt   torch.save dicts: state_dict, epoch, global_step, and
                           callbacks: {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', ...}":
                           {monitor, best_model_path, best_model_score, ...}}

The tracked metrics are the monitors of the ``ModelCheckpoint`` callbacks, read from the
newest checkpoint (``last.ckpt`` when there is one: it is saved after the top-k files, so
its callback state names the current best of every monitor).  ``best_model_path`` holds the
training machine's absolute path, so it is resolved by its basename inside the run dir.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.rundir import (
    BestRecord,
    Log,
    Run,
    _float_or_none,
    default_mode,
    parse_lightning_csv,
    read_text_file,
)

__all__ = ["LightningRun"]

_MODE = re.compile(r"'mode':\s*'(min|max)'")
#: The callbacks whose state names a monitored metric.
_MONITORING = ("ModelCheckpoint", "EarlyStopping")


def _callback_args(key: str) -> dict[str, Any]:
    """``"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}"`` -> its dict, parsed as a
    literal (never evaluated); {} when the key is not in that shape."""
    brace = key.find("{")
    if brace < 0:
        return {}
    try:
        value = ast.literal_eval(key[brace:])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        match = _MODE.search(key)
        return {"mode": match.group(1)} if match else {}
    return value if isinstance(value, dict) else {}


class LightningRun(Run):
    format = "lightning"

    # -- files ---------------------------------------------------------------------------

    def _read_log(self) -> Log:
        path = self.path / "metrics.csv"
        if not path.exists() and not path.is_symlink():
            raise RunDirError(
                f"{self.shown(path)}: not found (a Lightning run is read from its CSVLogger log; "
                "add CSVLogger, or give the TensorBoard dir with --run-format tensorboard)"
            )
        self.resolve("metrics.csv")
        shown = self.shown(path)
        return parse_lightning_csv(read_text_file(path, shown), shown)

    @property
    def config(self) -> dict[str, Any] | None:
        """``hparams.yaml`` (Lightning's record of the run's hyper-parameters)."""
        return self._cached("config", lambda: self._optional_yaml_mapping("hparams.yaml"))

    def checkpoint_files(self) -> list[Path]:
        """Every ``.ckpt`` in ``checkpoints/`` (and the run dir itself), newest first."""
        found: list[Path] = []
        for folder in (self.path / "checkpoints", self.path):
            try:
                found += [p for p in folder.iterdir() if p.suffix == ".ckpt" and p.is_file()]
            except OSError:
                continue
        return sorted(found, key=lambda p: (p.name != "last.ckpt", -p.stat().st_mtime_ns, p.name))

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

    def callback_states(self) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
        """(checkpoint shown, [(kind, mode, state)]) from the newest loadable checkpoint."""
        def make() -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
            files = self.checkpoint_files()
            if not files:
                raise RunDirError(f"{self.shown(self.path / 'checkpoints')}: no .ckpt files")
            errors: list[str] = []
            for path in files:
                shown = self._shown_file(path)
                try:
                    ckpt = self.checkpoint(str(path.relative_to(self.path)))
                except (RunDirError, ValueError) as exc:
                    errors.append(str(exc))
                    continue
                callbacks = ckpt.get("callbacks")
                out: list[tuple[str, str, dict[str, Any]]] = []
                if isinstance(callbacks, dict):
                    for key, state in callbacks.items():
                        if not isinstance(key, str):
                            continue
                        kind = key.split("{", 1)[0]
                        if kind not in _MONITORING:
                            continue
                        # a malformed state of the callbacks that name the best checkpoint is a
                        # broken file, not a run without them: say so instead of skipping it
                        if not isinstance(state, dict):
                            raise RunDirError(f"{shown}: callbacks[{kind}] is a {type(state).__name__}, "
                                              "expected the callback's state dict")
                        args = _callback_args(key)
                        monitor = state.get("monitor", args.get("monitor"))
                        if monitor is None:  # ModelCheckpoint(monitor=None) keeps only the last
                            continue
                        if not isinstance(monitor, str):
                            raise RunDirError(f"{shown}: callbacks[{kind}] monitor {str(monitor)[:40]!r} "
                                              f"({type(monitor).__name__}) is not a metric name")
                        mode = args.get("mode")
                        out.append((kind, mode if mode in ("min", "max") else default_mode(monitor), state))
                return shown, out
            raise RunDirError(errors[0])

        return self._cached("callbacks", make)  # type: ignore[no-any-return]

    def _model_checkpoints(self) -> list[tuple[str, dict[str, Any]]]:
        _, states = self.callback_states()
        return [(mode, s) for kind, mode, s in states if kind == "ModelCheckpoint"]

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
            _, states = self.callback_states()
        except RunDirError:
            states = []
        for wanted in ("ModelCheckpoint", "EarlyStopping"):
            for kind, mode, state in states:
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
                got = "empty" if best in ("", None) else f"{str(best)[:60]!r} ({type(best).__name__})"
                raise RunDirError(f"{self.callback_states()[0]}: ModelCheckpoint(monitor='{metric}') "
                                  f"best_model_path is {got}, not a checkpoint file")
            base = best.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
            if base in ("", ".", ".."):
                raise RunDirError(f"{self.callback_states()[0]}: ModelCheckpoint(monitor='{metric}') "
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
        if "." not in name and "/" not in name and (name in ("best", "final", "last") or name.startswith("best_")):
            if name.startswith("best"):
                metric = self.monitor[0] if name == "best" else name[len("best_"):]
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
        state. Lightning saves no RNG state, so a resume is never bit-exact; not required."""
        name = "last"
        shown = self.checkpoint_shown(name)
        ckpt = self.checkpoint(name)
        held: list[str] = []
        missing: list[str] = []
        for kind, key in (("model", "state_dict"), ("optimizer", "optimizer_states"), ("loops", "loops")):
            (held if ckpt.get(key) else missing).append(kind)
        if ckpt.get("lr_schedulers"):
            held.append("scheduler")
        epoch = ckpt.get("epoch")
        return shown, (epoch + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) else None), held, missing

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
            return BestRecord(metric, shown, problem=str(exc))
        epoch = ckpt.get("epoch")
        score = _scalar(state.get("best_model_score"))
        value = _float_or_none(score)
        if value is None and score is not None:
            return BestRecord(metric, shown, problem=(
                f"{self.callback_states()[0]}: ModelCheckpoint(monitor='{metric}') best_model_score "
                f"{str(score)[:40]!r} is not a number"))
        return BestRecord(
            metric, shown,
            epoch=epoch + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
            value=value,
        )


def _scalar(value: Any) -> Any:
    """A 0-d tensor (Lightning stores scores as tensors) as a Python number."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (RuntimeError, ValueError):
            return None
    return value
