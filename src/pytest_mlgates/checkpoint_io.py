"""A run's checkpoints, loaded safely, and where a checkpoint keeps what the gates read.

A checkpoint comes from a stranger as often as from a colleague: it is loaded with
``torch.load(..., weights_only=True)`` (torch 2.6 or later), after its pickle is counted
for reference bombs (``bounded.check_pickle``), from a regular file inside the run dir
only.  A file that would run code is refused with one :class:`RunDirError` line naming
the globals it wanted -- never executed.  Each file is loaded once per process, however
many gates ask for it (cached by path, mtime and size in the bounded ``memo.CHECKPOINTS``;
memory-mapped where the file format allows)::

    >>> ckpt = load_checkpoint_file(Path("runs/x/checkpoints/best.pt"), root=Path("runs/x"))
    >>> sorted(state_dict_of(ckpt, "runs/x/checkpoints/best.pt"))[:2]
    ['fc.bias', 'fc.weight']

:func:`state_dict_of`, :func:`resume_kinds` and :func:`checkpoint_monitors` find the
weights, the resume state and the best-metric records in a loaded checkpoint the same
way for every format, every gate and ``mlgates prove``.  torch is imported only when a
checkpoint is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runfiles import open_run_file, run_file

__all__ = [
    "HARMLESS_GLOBALS", "RESUME_KEYS", "STATE_DICT_KEYS", "checkpoint_monitors", "holds_state",
    "load_checkpoint_file", "resume_kinds", "safe_torch_load", "state_dict_of",
]

def require_safe_torch() -> Any:
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

    torch = require_safe_torch()
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
    torch = require_safe_torch()
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
