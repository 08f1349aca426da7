"""A Hugging Face Trainer's saved weights: ``checkpoint-N/`` folders and the files in them.

Which folder is a checkpoint (:func:`checkpoint_step`), which files hold a model's weights
(:data:`WEIGHT_FILES`: safetensors preferred, shards joined through their index), and how
they are loaded safely (:func:`load_weights_dir`: every file a regular file inside the run
dir, ``.bin`` with ``weights_only=True``, cached per process by path, mtime and size).
safetensors and torch are imported when weights are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_mlgates.checkpoint_io import load_checkpoint_file
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runfiles import read_json_file, run_file

__all__ = ["WEIGHT_FILES", "checkpoint_step", "load_weight_file", "load_weights_dir"]

#: The files a Trainer saves a model's weights in, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_WEIGHTS_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def checkpoint_step(name: str) -> int | None:
    """N of a ``checkpoint-N`` folder name, None for any other name."""
    if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
        return int(name[len("checkpoint-"):])
    return None


def _load_safetensors(path: Path, shown: str, root: Path) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise RunDirError(f"{shown}: a safetensors file, but the 'safetensors' package is not installed") from None
    real = run_file(root, path, shown)  # inside the run, a regular file: never a FIFO or a link out
    try:
        return dict(load_file(str(real), device="cpu"))
    except Exception as exc:  # noqa: BLE001 - a corrupt header raises SafetensorError and others
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise RunDirError(f"{shown}: not a loadable safetensors file ({first})") from None


def load_weight_file(path: Path, shown: str, root: Path) -> dict[str, Any]:
    """One weights file: safetensors, else a torch pickle loaded with ``weights_only=True``."""
    if path.name.endswith(".safetensors"):
        return _load_safetensors(path, shown, root)
    return load_checkpoint_file(path, shown, root=root)  # weights_only=True


def load_weights_dir(folder: Path, shown: str, *, root: Path | None = None) -> dict[str, Any]:
    """The state dict saved in ``folder`` (safetensors preferred; shards joined), safely:
    every file a regular file inside ``root`` (the run dir; by default ``folder``)."""
    root = Path(root) if root is not None else Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        file_shown = f"{shown}/{name}"
        real = run_file(root, path, file_shown)  # a link out, a FIFO: one line, never opened
        st = real.stat()
        key = (str(real), st.st_mtime_ns, st.st_size)
        if key in _WEIGHTS_CACHE:
            return _WEIGHTS_CACHE[key]
        if name.endswith(".index.json"):
            index = read_json_file(path, file_shown, root=root)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise RunDirError(f"{file_shown}: no 'weight_map' of tensor name -> shard file")
            state: dict[str, Any] = {}
            for shard in sorted(set(weight_map.values())):
                if "/" in shard or "\\" in shard or shard.startswith("."):
                    raise RunDirError(f"{file_shown}: shard name {shard!r} refused (must be a file in {shown})")
                state.update(load_weight_file(folder / shard, f"{shown}/{shard}", root))
        else:
            state = load_weight_file(path, file_shown, root)
        _WEIGHTS_CACHE[key] = state
        return state
    raise RunDirError(f"{shown}: no model weights ({', '.join(WEIGHT_FILES)})")
