"""The parsed run dir: what every gate and the ``run`` fixture read, whatever wrote it.

This module holds what every run format shares; each format (the engine, Lightning, the
HF Trainer, MLflow, TensorBoard, a plain loop) is one module of ``pytest_mlgates.formats``
holding its reader (a :class:`Run` subclass), its detection and its ``mlgates prove``
mutations::

    >>> run = open_run("runs/x")            # the format is detected, or forced
    >>> run.format, run.final.val_loss, run.best_epoch
    ('engine', 0.31, 9)

A run dir comes from a stranger as often as from a colleague, so every reader is
defensive: a missing file, a ragged CSV row, a non-numeric cell, truncated JSON or a
checkpoint that wants to unpickle a class each give one :class:`RunDirError` line naming
the file and what was wrong -- never another exception and never executed code.

Readers are lazy and cached: ``open_run`` only finds the format from file names, and a
gate that needs only the log never opens a checkpoint.  Checkpoints load with
``torch.load(..., weights_only=True)`` once per process and path (memory-mapped where the
file format allows), however many gates ask for them; :func:`state_dict_of` finds the
weights in one, the same way for every gate and for ``mlgates prove``.

Epoch numbers are the log's own everywhere: Lightning's count from 0, the engine's and
most hand-written loops' from 1 (``Log.first_epoch``); a checkpoint's epoch is compared
in the log's numbering (``BestRecord.epoch``, ``Run.resume_state``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runfiles import (  # the one way a run dir's files are opened (re-exported)
    MAX_TEXT_BYTES,
    open_run_file,
    read_json_file,
    read_text_file,
    read_yaml_file,
    resolve_inside,
    run_file,
)

__all__ = [
    "MAX_TEXT_BYTES", "BestRecord", "Log", "Row", "Run", "RunSection", "epochs_or_steps", "load_checkpoint_file",
    "merge_by_epoch", "open_run", "open_run_file", "read_json_file", "read_text_file", "read_yaml_file",
    "regroup_by_logged_epoch", "regroup_steps", "resolve_inside", "run_file", "safe_torch_load", "state_dict_of",
]



class MissingColumnError(RunDirError, AttributeError):
    """A column the run did not log; an AttributeError too, so ``getattr(row, x, d)`` works."""

    def __str__(self) -> str:  # AttributeError's own __str__ must not win in the MRO
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- small readers


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def to_float(cell: Any, where: str) -> float:
    """A log cell as float: numbers, numeric strings, 'nan'/'inf'; anything else is an error."""
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, (int, float)):
        try:
            return float(cell)
        except OverflowError:  # an int of 400 digits: as float("1" * 400) reads it
            return math.inf if cell > 0 else -math.inf
    if isinstance(cell, str):
        try:
            return float(cell.strip())
        except ValueError:
            pass
    raise RunDirError(f"{where}: {shown_value(cell, 40)} is not a number")


def to_epoch(cell: Any, where: str) -> float:
    """An epoch number: like :func:`to_float`, but NaN/Inf are errors (an epoch counts)."""
    value = to_float(cell, where)
    if not math.isfinite(value):
        raise RunDirError(f"{where}: epoch {value} is not a finite number")
    return value


# --------------------------------------------------------------------------- log and rows


class Row:
    """One epoch of the log; ``row.val_loss`` and ``row["val_loss"]`` both work."""

    __slots__ = ("_label", "_source", "_values")
    _values: dict[str, float]
    _source: str
    _label: str

    def __init__(self, values: dict[str, float], source: str, label: str) -> None:
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_label", label)

    @property
    def epoch(self) -> int:
        value = self._values.get("epoch", float("nan"))
        return int(value) if math.isfinite(value) else -1

    def __getitem__(self, name: str) -> float:
        try:
            return self._values[name]
        except KeyError:
            raise MissingColumnError(
                f"{self._source}: no column '{name}' (columns: {', '.join(list(self._values)[:40])[:200]})"
            ) from None

    def __getattr__(self, name: str) -> float:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Row is read-only")

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str, default: float | None = None) -> float | None:
        return self._values.get(name, default)

    def keys(self) -> list[str]:
        return list(self._values)

    def as_dict(self) -> dict[str, float]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Row({self._label}, epoch={self.epoch})"


# Log, merge_by_epoch and regroup_by_logged_epoch live in runlog.py (the log as columns);
# imported here, where every format has always found them.
from pytest_mlgates.runlog import (
    Log,
    epochs_or_steps,
    merge_by_epoch,
    regroup_by_logged_epoch,
    regroup_steps,
)

# --------------------------------------------------------------------------- checkpoints

def _require_safe_torch() -> Any:
    from pytest_mlgates.errors import require_extra

    torch = require_extra("torch", "opening a checkpoint")

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < (2, 6):
        raise RunDirError(
            f"torch {torch.__version__} is too old to open checkpoints safely "
            "(weights_only=True is bypassable below 2.6, CVE-2025-32434); upgrade torch"
        )
    return torch


#: Types a checkpoint may hold that ``weights_only=True`` refuses although loading them runs
#: no code of the file's choosing: a checkpoint refused *only* for these loads with exactly
#: these allowed (``torch.serialization.safe_globals``), never with a blanket fallback.
#: timm's training checkpoints hold their ``args`` as an ``argparse.Namespace`` (timm itself
#: loads them this way).
HARMLESS_GLOBALS: dict[str, tuple[str, str]] = {"argparse.Namespace": ("argparse", "Namespace")}


def _torch_load(torch: Any, path: Path, allowed: list[Any] | None = None, mmap: bool = True) -> Any:
    import contextlib

    guard = torch.serialization.safe_globals(allowed) if allowed else contextlib.nullcontext()
    with guard:
        if not mmap:
            return torch.load(str(path), weights_only=True, map_location="cpu")
        try:
            return torch.load(str(path), weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
        # legacy (non-zip) files cannot be memory-mapped
        return torch.load(str(path), weights_only=True, map_location="cpu")


def _harmless_only(unsafe: list[str]) -> list[Any] | None:
    """The objects to allow when every global a checkpoint needs is a well-known harmless
    type (:data:`HARMLESS_GLOBALS`); None when any is not."""
    import importlib

    if not unsafe or any(name not in HARMLESS_GLOBALS for name in unsafe):
        return None
    out = []
    for name in unsafe:
        module, attr = HARMLESS_GLOBALS[name]
        out.append(getattr(importlib.import_module(module), attr))
    return out


def safe_torch_load(path: Path, mmap: bool = True) -> Any:
    """``torch.load(weights_only=True)``; a file refused only for :data:`HARMLESS_GLOBALS`
    is loaded again with exactly those allowed.  Anything else propagates the refusal.
    ``mmap=False`` for a caller that writes the file back (a memory-mapped tensor of a file
    rewritten in place faults with SIGBUS)."""
    import pickle

    torch = _require_safe_torch()
    try:
        return _torch_load(torch, path, mmap=mmap)
    except pickle.UnpicklingError as refused:
        try:
            unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - not a zip: nothing to allow
            unsafe = []
        allowed = _harmless_only(unsafe)
        if allowed is None:
            raise refused from None
        return _torch_load(torch, path, allowed, mmap=mmap)


def _check_checkpoint_pickle(path: Path, shown: str, root: Path) -> None:
    """Refuse a checkpoint whose pickle would build a reference bomb (``bounded.check_pickle``)
    before ``torch.load`` sees it: the zip format's ``data.pkl``, else the file's own pickles."""
    import zipfile

    from pytest_mlgates.bounded import MAX_PICKLE_BYTES, PickleRefused, check_pickle

    try:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            archive = None
        if archive is None:  # torch's legacy format (four pickles, then storages) or a plain pickle
            with open_run_file(root, path, shown) as fh:
                check_pickle(fh, pickles=4)
            return
        with archive:
            infos = [i for i in archive.infolist() if i.filename.endswith("data.pkl")]
            if not infos:
                return  # torch says what is missing
            if infos[0].file_size > MAX_PICKLE_BYTES:
                raise RunDirError(f"{shown}: refused to load: its pickle is {infos[0].file_size} bytes, "
                                  f"more than the {MAX_PICKLE_BYTES} allowed")
            try:
                with archive.open(infos[0]) as fh:
                    data = fh.read(MAX_PICKLE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError):
                return  # a damaged archive: torch says so
            import io

            check_pickle(io.BytesIO(data))
    except PickleRefused as exc:
        raise RunDirError(f"{shown}: refused to load: {exc}") from None


def load_checkpoint_file(path: Path, shown: str | None = None, *, root: Path | None = None) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``, cached per process by (path, mtime, size)
    in ``memo.CHECKPOINTS`` (bounded: the most recently used, up to its byte budget).

    The file must be a regular file inside ``root`` (the run dir; by default the file's own
    folder), as :func:`~pytest_mlgates.runfiles.run_file` checks: a FIFO is never opened.
    A checkpoint that needs globals the safe loader refuses is not loaded anyway: the
    error lists them, so the user can see what the file would have executed.
    """
    path = Path(path)
    shown = shown or str(path)
    try:
        path = run_file(root if root is not None else path.parent, path, shown)
    except RunDirError as exc:
        if str(exc).endswith("is a directory, expected a file"):
            raise RunDirError(f"{shown}: is a directory, expected a checkpoint file") from None
        raise
    try:
        st = path.stat()
    except OSError as exc:
        raise RunDirError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    from pytest_mlgates import memo

    key = (str(path), st.st_mtime_ns, st.st_size)
    cached = memo.CHECKPOINTS.get(key)
    if cached is not None:
        return cached
    if st.st_size == 0:
        raise RunDirError(f"{shown}: empty file, not a checkpoint")
    _check_checkpoint_pickle(path, shown, root if root is not None else path.parent)
    torch = _require_safe_torch()
    import pickle  # only for the exception type torch raises; never used to load
    import warnings

    obj: Any = None
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            obj = safe_torch_load(path)
    except pickle.UnpicklingError as exc:
        unsafe: list[str] = []
        try:
            unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - best effort: the file may not be a zip at all
            unsafe = []
        if unsafe:
            raise RunDirError(
                f"{shown}: refused to load: it needs globals the safe loader (weights_only=True) "
                f"does not allow: {', '.join(sorted(unsafe)[:6])}"
            ) from None
        # torch's message advises weights_only=False; show only the line saying what was refused
        text = str(exc)
        tail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        reason = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "")
        why = f"weights_only unpickler: {reason}" if reason else "the weights_only unpickler refused it"
        raise RunDirError(f"{shown}: not a loadable checkpoint ({why[:200]})") from None
    except MemoryError:
        raise RunDirError(f"{shown}: too large to load") from None
    except Exception as exc:  # noqa: BLE001 - truncated/garbage files raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        # torch's longer messages go on to advise weights_only=False: keep the first sentence
        first = first.split(". ", 1)[0].rstrip(".").replace("``", "")
        # a cut-off zip makes torch's mmap or zip reader fail with a bare errno
        hint = "truncated or corrupt file; " if isinstance(exc, OSError) or "zip" in first.lower() else ""
        raise RunDirError(
            f"{shown}: not a loadable checkpoint ({hint}{exc.__class__.__name__}: {first[:200]})"
        ) from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{shown}: holds a {type(obj).__name__}, expected a checkpoint dict")
    memo.CHECKPOINTS.put(key, obj, st.st_size)  # a loaded checkpoint takes about its file's size
    return obj


#: Where a checkpoint dict keeps the model's weights, in the order they are looked for:
#: Lightning and the HF readers (``state_dict``), the common hand-written loop
#: (``model_state_dict``), the engine (``model``).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def _is_tensor(value: Any) -> bool:
    return type(value).__name__ in ("Tensor", "Parameter") and hasattr(value, "dtype")


def state_dict_of(ckpt: Any, shown: str) -> dict[str, Any]:
    """The model weights of a checkpoint: the dict under ``state_dict``,
    ``model_state_dict`` or ``model``, or the checkpoint itself when it is a bare state
    dict (every value a tensor).  The same rule for every gate and for ``mlgates prove``;
    the dict returned is the checkpoint's own (prove edits it in place)::

        >>> state_dict_of({"epoch": 3, "model_state_dict": {"fc.weight": w}}, "ckpt/last.pt")
        {'fc.weight': tensor(...)}
    """
    if isinstance(ckpt, dict):
        for key in STATE_DICT_KEYS:
            state = ckpt.get(key)
            if isinstance(state, dict) and any(_is_tensor(v) for v in state.values()):
                if not all(isinstance(k, str) for k in state):
                    odd = next(k for k in state if not isinstance(k, str))
                    raise RunDirError(f"{shown}: {key} has a key {shown_value(odd, 40)} ({type(odd).__name__}); "
                                      "the keys of a state dict are parameter names")
                return state
        if ckpt and all(isinstance(k, str) for k in ckpt) and all(_is_tensor(v) for v in ckpt.values()):
            return ckpt
    raise RunDirError(f"{shown}: no model weights (no state dict under {', '.join(STATE_DICT_KEYS)}, "
                      "and not a bare state dict of tensors)")


#: What a resume needs, and the keys each kind of state is saved under by the trainers
#: whose checkpoints are read: the engine, Lightning, and common hand-written loops.
RESUME_KEYS: dict[str, tuple[str, ...]] = {
    "optimizer": ("optimizer", "optimizer_state_dict", "optimizer_states", "optim"),
    "scheduler": ("scheduler", "scheduler_state_dict", "lr_scheduler", "lr_schedulers"),
    "rng": ("rng", "rng_state", "rng_states"),
}


def resume_kinds(ckpt: Any, shown: str) -> list[str]:
    """The kinds of state a checkpoint holds, of ``model``, ``optimizer``, ``scheduler``,
    ``rng``: weights found by :func:`state_dict_of`, the rest under any of their usual keys."""
    held: list[str] = []
    try:
        state_dict_of(ckpt, shown)
        held.append("model")
    except RunDirError:
        pass
    if isinstance(ckpt, dict):
        for kind, keys in RESUME_KEYS.items():
            if any(holds_state(ckpt.get(k)) for k in keys):
                held.append(kind)
    return held


def holds_state(value: Any) -> bool:
    """A saved state is there: not None, not empty (a tensor counts by its size: its own
    truth value is an error for more than one element)."""
    if value is None:
        return False
    numel = getattr(value, "numel", None)
    if _is_tensor(value) and callable(numel):
        return bool(numel())
    try:
        return bool(len(value))
    except TypeError:
        return True


def checkpoint_monitors(ckpt: Any) -> dict[str, dict[str, Any]]:
    """The tracked metrics an engine checkpoint says it is the best for, each with its
    ``mode`` and ``value``. ``model-checkpoint/2`` maps them all (``{"val_loss": {"mode":
    "min", "value": 0.23}, ...}``: one epoch's checkpoint serves every metric that improved
    then); ``/1`` held one ``{"metric", "mode", "value"}``. Anything else: none. The records
    are the checkpoint's own dicts (editing one edits the checkpoint: ``mlgates prove``)."""
    monitor = ckpt.get("monitor") if isinstance(ckpt, dict) else None
    if not isinstance(monitor, dict):
        return {}
    if isinstance(monitor.get("metric"), str):  # model-checkpoint/1
        return {monitor["metric"]: monitor}
    return {k: v for k, v in monitor.items() if isinstance(k, str) and isinstance(v, dict)}


# --------------------------------------------------------------------------- the run

_MISSING = object()


@dataclass(frozen=True)
class RunSection:
    """A gate file's ``run:`` section: how to read a run that has no layout of its own.

    Parsed and validated by ``collect.py`` (``GateDocument.run``); paths are relative to the
    run dir, ``best`` holds ``{metric}``, ``tracked`` is ``((metric, mode), ...)``::

        run:
          format: plain
          log: logs/metrics.csv          # CSV or JSONL
          epochs_from: 1
          checkpoints: "ckpt/*.pt"
          best: "ckpt/best_{metric}.pt"
          tracked: [{metric: val_loss, mode: min}]
          splits: splits.json
    """

    format: str | None = None
    log: str | None = None
    epochs_from: int | None = None
    checkpoints: str | None = None
    best: str | None = None
    tracked: tuple[tuple[str, str], ...] = ()
    splits: str | None = None
    #: where the section is, for messages: ``acceptance/plain.gates.yaml:3`` (two gate files
    #: that say the same thing are the same section: one reader, one parse of the log)
    origin: str = field(default="", compare=False)

    def forced_format(self) -> str | None:
        """The format the section names, or ``plain`` when it says where the log is."""
        return self.format or ("plain" if self.log else None)


@dataclass
class BestRecord:
    """What a run says is the best checkpoint for one metric, in the log's epoch numbering.

    ``problem`` is set (one line) when the run has no usable best checkpoint for the metric:
    the file is missing, or names another metric.  ``epoch``/``value`` are None when the
    trainer does not record them.  ``path`` is the file (or HF folder) found.  ``step`` is
    the optimizer step it was saved at, where the trainer records it: a log of steps
    places the checkpoint by it."""

    metric: str
    shown: str
    epoch: int | None = None
    value: float | None = None
    problem: str | None = None
    path: Path | None = None
    step: int | None = None
    #: set when the file is there but its epoch and value cannot be read safely (an
    #: Ultralytics ``best.pt`` pickles a whole model, a ``.keras`` file records neither):
    #: why, in a few words; ``best_checkpoints`` then checks the file's presence only and says so
    unread: str | None = None


class Run:
    """A run dir, parsed lazily: what every format shares.  See the module docstring.

    One subclass per format (``pytest_mlgates.formats.<name>``) says where the log, the
    tracked metrics and the checkpoints are: ``_read_log``, ``tracked``, ``monitor``,
    ``best_checkpoint``, ``checkpoint_path``, ``default_checkpoint``, ``resume_state``,
    and optionally ``results``, ``config``, ``class_names``, ``splits_file``."""

    #: which trainer wrote the run dir (a name of ``pytest_mlgates.formats.FORMATS``)
    format = "?"

    def __init__(self, path: Path, section: RunSection | None = None) -> None:
        self.path = path
        self.section = section
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- paths ---------------------------------------------------------------------

    def resolve(self, rel: str) -> Path:
        """``rel`` inside the run dir, or a RunDirError: no absolute paths, no ``..``,
        no symlink that leads outside."""
        return resolve_inside(self.path, rel, "run dir")

    def shown(self, path: Path) -> str:
        """How a file of this run is named in messages: ``runs/x/training_log.csv``."""
        return str(path)

    def locate(self, rel: str) -> tuple[Path | None, list[str]]:
        """A gate file's path (``artifact``, ``key_link``'s ``from``): (the file it names, or
        None when absent; every place looked at, as shown in messages, the one found first).
        A format whose files live in more than one root (an MLflow run folder and its
        ``artifacts/``) looks in each, so a message names the path actually looked at."""
        path = self.resolve(rel)
        return (path if path.exists() else None), [self.shown(self.path / rel)]

    # -- lazily read files -----------------------------------------------------------

    def _cached(self, key: str, make: Any) -> Any:
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            try:
                value = make()
            except RunDirError as exc:
                self._cache[key] = exc
                raise
            self._cache[key] = value
        if isinstance(value, RunDirError):
            raise value
        return value

    def file(self, rel: str) -> Path:
        """The real path of the regular file ``rel`` inside the run dir, checked as
        :func:`~pytest_mlgates.runfiles.run_file` does (for libraries that open by name)."""
        return run_file(self.path, rel, self.shown(self.path / rel))

    def read_text(self, rel: str) -> str:
        """The text of ``rel`` inside the run dir (regular file, size-capped)."""
        return read_text_file(self.path / rel, self.shown(self.path / rel), root=self.path)

    def read_json(self, rel: str) -> Any:
        return read_json_file(self.path / rel, self.shown(self.path / rel), root=self.path)

    def read_yaml(self, rel: str) -> Any:
        return read_yaml_file(self.path / rel, self.shown(self.path / rel), root=self.path)

    def _optional_json(self, name: str) -> Any:
        path = self.path / name
        if not path.exists() and not path.is_symlink():
            return None
        return self.read_json(name)  # a symlink out of the run dir is refused, not followed

    def _optional_object(self, name: str) -> dict[str, Any] | None:
        data = self._optional_json(name)
        if data is not None and not isinstance(data, dict):
            raise RunDirError(f"{self.shown(self.path / name)}: expected a JSON object, got {type(data).__name__}")
        return data

    def _optional_yaml_mapping(self, name: str) -> dict[str, Any] | None:
        """A YAML mapping of the run dir (``{}`` when empty), None when the file is absent."""
        path = self.path / name
        if not path.exists() and not path.is_symlink():
            return None
        data = self.read_yaml(name)  # a symlink out of the run dir is refused, not followed
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise RunDirError(f"{self.shown(path)}: expected a mapping, got {type(data).__name__}")
        return data

    @property
    def results(self) -> dict[str, Any] | None:
        """The trainer's own summary of the run (the engine's training_results.json)."""
        return None

    @property
    def provenance(self) -> dict[str, Any] | None:
        return None

    @property
    def config(self) -> dict[str, Any] | None:
        """The run's hyper-parameters as the trainer recorded them, if it did."""
        return None

    @property
    def splits_file(self) -> str:
        """The JSON of named index lists (``split_integrity``'s default ``path:``)."""
        return self.section.splits if self.section is not None and self.section.splits else "splits.json"

    @property
    def splits(self) -> dict[str, Any] | None:
        return self._cached("splits", lambda: self._optional_object(self.splits_file))

    @property
    def log(self) -> Log:
        return self._cached("log", self._read_log)

    def _read_log(self) -> Log:
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run has no log reader")

    def metric_history(self) -> Log | None:
        """A second copy of the log to compare with (the engine's metric_history.json)."""
        return None

    # -- rows ------------------------------------------------------------------------

    def row_at(self, index: int, label: str) -> Row:
        log = self.log
        if len(log) == 0:
            raise RunDirError(f"{self.shown(log.source)}: no rows (header only)")
        return Row({c: float(log.array(c)[index]) for c in log.names}, self.shown(log.source), label)

    def _row_of_step(self, row: int, label: str) -> Row:
        """A row of a log of steps: each column's value in the last row of that step that
        holds it (NaN when none does); the rows of one step are its training and
        evaluation rows."""
        import numpy as np

        log = self.log
        same = np.flatnonzero(log.labels == log.labels[row])
        values: dict[str, float] = {}
        for name in log.names:
            mask = log.held(name)
            rows = same if mask is None else same[mask[same]]
            values[name] = float(log.array(name)[rows[-1]]) if len(rows) else math.nan
        return Row(values, self.shown(log.source), label)

    @property
    def final(self) -> Row:
        """The last row; in a log of steps each column's last logged value (``final.<col>``)."""
        log = self.log
        if not log.sparse:
            return self.row_at(-1, "final")
        if len(log) == 0:
            raise RunDirError(f"{self.shown(log.source)}: no rows (header only)")
        values = {}
        for name in log.names:
            last = log.last_row(name)
            values[name] = math.nan if last is None else float(log.array(name)[last])
        return Row(values, self.shown(log.source), "final")

    @property
    def monitor(self) -> tuple[str, str]:
        """(metric, mode) that defines "best"; ``val_loss`` unless the format knows better."""
        return "val_loss", "min"

    def _best_row(self) -> int | None:
        """Position of the row where the monitor metric is best (its first best value)."""
        metric, mode = self.monitor
        log = self.log
        if metric not in log:
            return None
        values, _ = log.series(metric)
        index = best_index(values, mode)
        return None if index is None else int(log.rows_of(metric)[index])

    @property
    def best_epoch(self) -> int | None:
        """The number of the best row: its epoch, or its step in a log of steps."""
        def make() -> int | None:
            row = self._best_row()
            return None if row is None else int(self.log.labels[row])

        return self._cached("best_epoch", make)  # type: ignore[no-any-return]

    @property
    def best(self) -> Row:
        metric, _mode = self.monitor
        log = self.log
        if metric not in log:
            raise RunDirError(f"{self.shown(log.source)}: monitor metric '{metric}' is not a logged column")
        row = self._best_row()
        if row is None:
            raise RunDirError(f"{self.shown(log.source)}: '{metric}' has no finite value, so no best epoch")
        if log.sparse:
            return self._row_of_step(row, f"best {metric}")
        return self.row_at(row, f"best {metric}")

    # -- what the run is about -----------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        """Class names from the log's ``val_recall_<class>`` columns (formats that record
        them elsewhere override this)."""
        try:
            return [c[len("val_recall_"):] for c in self.log.columns if c.startswith("val_recall_")]
        except RunDirError:
            return []

    @property
    def tracked(self) -> list[tuple[str, str]]:
        """(metric, mode) of every metric the run keeps a best checkpoint of."""
        return []

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint_path(self, name: str) -> Path:
        """A checkpoint by name (``best``, ``best_<metric>``, ``final``, ``last`` where the
        format knows them) or by its path relative to the run dir."""
        return self.resolve(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """The checkpoint dict, loaded safely and once per process (see load_checkpoint_file)."""
        path = self.checkpoint_path(name)  # resolved inside the run dir
        return load_checkpoint_file(path, self.checkpoint_shown(name), root=self.path)

    def checkpoint_shown(self, name: str) -> str:
        """How checkpoint ``name`` is named in messages: ``runs/x/checkpoints/best_val_loss.pt``."""
        path = self.checkpoint_path(name)
        root = self.path.resolve()
        return self.shown(self.path / path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def default_checkpoint(self) -> str:
        """The checkpoint a gate opens when the gate file names none."""
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run names no checkpoint to load; "
                          "give checkpoint: in the gate file")

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """The run's resume point: (shown name, epoch in the log's numbering, the kinds of
        state it holds, the kinds a resume needs that it lacks)."""
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run has no resume point the gate can read")

    def resume_hint(self, epoch: int | None, last_epoch: int) -> str:
        """Why the resume point is at ``epoch`` rather than the log's ``last_epoch``, when the
        format knows a trainer behaviour that explains it, with the fix ("" otherwise)."""
        return ""

    def resume_path(self) -> Path:
        """The file (or folder) ``resume_state`` reads: what ``mlgates prove`` corrupts."""
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run has no resume point the gate can read")

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        """Where the best checkpoint of ``metric`` is, and the epoch and value it records."""
        shown = self.shown(self.path)
        return BestRecord(metric, shown, problem=f"{shown}: a {self.format} run keeps no best checkpoint "
                                                 f"the gate can read for {metric}")

    def log_epoch_of(self, ckpt: Any) -> int | None:
        """The epoch a checkpoint was saved at, in the log's numbering (its ``epoch``)."""
        epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
        return epoch if is_epoch_number(epoch) else None

    # -- expressions ---------------------------------------------------------------------

    def eval_env(self, metric_aliases: dict[str, str] | None = None) -> Any:
        """The columns a ``check:`` sees (an ``expr.EvalEnv`` over the log's arrays), with
        the gate file's ``metrics:`` renames applied."""
        from pytest_mlgates.expr import EvalEnv

        # lazily: a check that never says best. must not open a checkpoint to find it
        return EvalEnv.from_log(self.log, lambda: self.best_epoch, metric_aliases)

    def real_column(self, name: str, metric_aliases: dict[str, str] | None = None) -> str:
        """The log's name of a column the gate file calls ``name`` (aliases applied), or a
        RunDirError naming the log."""
        log = self.log
        real = (metric_aliases or {}).get(name, name)
        if real in log:
            return real
        if name in log:
            return name
        raise RunDirError(
            f"{self.shown(log.source)}: no column '{real}' (columns: {', '.join(log.columns)[:200]})"
        )

    def column(self, name: str, metric_aliases: dict[str, str] | None = None) -> list[float]:
        """A logged column by its spec name (aliases applied), or a RunDirError naming the log."""
        return self.log.columns[self.real_column(name, metric_aliases)]

    def series(self, name: str, metric_aliases: dict[str, str] | None = None) -> tuple[Any, Any]:
        """(values, row positions) of a logged column by its spec name: every row of a log
        of epochs, the rows that hold it in a log of steps (``Log.series``)."""
        real = self.real_column(name, metric_aliases)
        values, _ = self.log.series(real)
        return values, self.log.rows_of(real)


def numbers_close(a: float, b: float, tol: float = 1e-9) -> bool:
    """Equal within a relative ``tol`` (NaN equals NaN): a number as written down and read back."""
    if math.isnan(a) and math.isnan(b):
        return True
    return a == b or abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def is_epoch_number(value: Any) -> bool:
    """An int that can number an epoch (a 5000-digit int from a pickle is not one: it
    cannot even be printed)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**53) < value < 2**53


def float_or_none(value: Any) -> float | None:
    """``float(value)``, or None when it is not a number (an int too large for a float is
    +/-inf, as the same digits in a string would be)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1023:
        return math.inf if value > 0 else -math.inf
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def default_mode(metric: str) -> str:
    """``min`` for losses and errors, ``max`` for everything else."""
    low = metric.lower()
    return "min" if ("loss" in low or "error" in low or low.endswith("_err")) else "max"


def best_index(values: Any, mode: str) -> int | None:
    """Index of the best value; ties go to the first occurrence and NaN is never best."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if not array.size or np.isnan(array).all():
        return None
    return int(np.nanargmin(array) if mode == "min" else np.nanargmax(array))


def open_run(path: str | Path, run_format: str | None = None, run_section: RunSection | None = None) -> Run:
    """The run dir at ``path``; a RunDirError naming it when it is not one.

    ``run_section`` is a gate file's parsed ``run:`` section (its format, and for a plain
    run where the log, checkpoints and splits are), or None.  ``run_format`` (the
    ``--run-format`` option) forces a reader and wins over the section's ``format:``;
    otherwise the format is detected from the names in the directory, and a directory that
    fits two formats, or none, is one RunDirError line naming the candidates.
    """
    from pytest_mlgates import formats

    p = Path(path)
    if not p.exists():
        raise RunDirError(f"{p}: run dir not found")
    if not p.is_dir():
        raise RunDirError(f"{p}: not a directory (a run dir is a directory)")
    try:
        os.listdir(p)
    except OSError as exc:
        raise RunDirError(f"{p}: cannot list run dir ({exc.strerror or exc})") from None
    forced = run_format if run_format not in (None, "", "auto") else None
    if forced is None and run_section is not None:
        forced = run_section.forced_format()
    where, name = formats.choose(p, forced)
    return formats.read(name, where, run_section)
