"""Mutations of a run copy's files for ``mlgates prove``: a file removed, truncated or
appended to, a split leaked, a checkpoint's weights set to NaN, a resume state dropped.
Each is a function of the copy's run dir that raises ``MutationError`` when it has
nothing to change; torch and safetensors are imported only when one runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import MlgatesError
from pytest_mlgates.formats._mutation_base import MutationError

__all__ = ["append_text", "drop_state", "leak_split", "nan_checkpoint_file", "nan_weights", "remove", "truncate"]


def remove(rel: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        target = run / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        else:
            raise MutationError(f"{rel}: not in the run to delete")

    return apply


def truncate(rel: str, keep: Callable[[int], int]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        target = run / rel
        if not target.is_file():
            raise MutationError(f"{rel}: not a file to truncate")
        data = target.read_bytes()
        target.write_bytes(data[: keep(len(data))])

    return apply


def append_text(rel: str, text: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        if not (run / rel).is_file():
            raise MutationError(f"{rel}: not a file to edit")
        with open(run / rel, "a", encoding="utf-8") as handle:
            handle.write(text)

    return apply


def leak_split(rel: str, groups_key: str) -> Callable[[Path], None]:
    """The first train index (and its group id) also appears in val."""

    def apply(run: Path) -> None:
        path = run / rel
        if not path.is_file():
            raise MutationError(f"{rel}: no splits file to leak")
        splits = json.loads(path.read_text(encoding="utf-8"))
        names = [k for k, v in splits.items() if isinstance(v, list) and k != groups_key and v]
        if len(names) < 2:
            raise MutationError(f"{rel}: fewer than two non-empty splits")
        source = "train" if "train" in names else names[0]
        target = "val" if "val" in names else next(n for n in names if n != source)
        splits[target].append(splits[source][0])
        groups = splits.get(groups_key)
        if isinstance(groups, dict) and isinstance(groups.get(source), list) and groups[source]:
            groups.setdefault(target, []).append(groups[source][0])
        path.write_text(json.dumps(splits), encoding="utf-8")

    return apply


def _nan_state(state: dict[str, Any]) -> int:
    import torch

    changed = 0
    for key, tensor in state.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            state[key] = torch.full_like(tensor, float("nan"))
            changed += 1
    return changed


def nan_checkpoint_file(path: Path, extra_keys: tuple[str, ...] = ()) -> None:
    """Every floating tensor of a checkpoint's weights (``state_dict_of``, and ``extra_keys``
    such as the engine's ``ema``) set to NaN, saved back; a safetensors file likewise."""
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file, save_file

        tensors = dict(load_file(str(path)))
        if not _nan_state(tensors):
            raise MutationError(f"{path.name}: no floating tensor to set to NaN")
        save_file(tensors, str(path))
        return
    import torch

    from pytest_mlgates.checkpoint_io import safe_torch_load, state_dict_of

    ckpt = safe_torch_load(path, mmap=False)
    try:
        states = [state_dict_of(ckpt, path.name)]
    except MlgatesError as err:
        raise MutationError(str(err)) from None
    states += [ckpt[k] for k in extra_keys if isinstance(ckpt, dict) and isinstance(ckpt.get(k), dict)]
    if not sum(_nan_state(s) for s in states):
        raise MutationError(f"{path.name}: no floating tensor to set to NaN")
    torch.save(ckpt, path)


def nan_weights(rels: list[str], extra_keys: tuple[str, ...] = ()) -> Callable[[Path], None]:
    """The weights of each checkpoint (a file, or a folder of weight files) set to NaN."""
    def apply(run: Path) -> None:
        done = 0
        for rel in rels:
            target = run / rel
            # a folder is an HF checkpoint: its weight files only (its optimizer.pt,
            # rng_state.pth and training_args.bin are pickles that are never opened)
            files = [target] if target.is_file() else sorted(
                p for p in target.glob("*") if (p.name.startswith("model") and p.name.endswith(".safetensors"))
                or (p.name.startswith("pytorch_model") and p.name.endswith(".bin")))
            for file in files:
                nan_checkpoint_file(file, extra_keys)
                done += 1
        if not done:
            raise MutationError(f"{', '.join(rels)}: no checkpoint to set to NaN")

    return apply


def drop_state(rel: str, kind: str) -> Callable[[Path], None]:
    """A checkpoint loses one kind of resume state (``optimizer``...), saved back."""
    def apply(run: Path) -> None:
        from pytest_mlgates.checkpoint_io import RESUME_KEYS

        target = run / rel
        if target.is_dir():
            names = {"optimizer": ("optimizer.pt",), "scheduler": ("scheduler.pt",), "rng": ("rng_state.pth",)}[kind]
            found = [target / n for n in names if (target / n).exists()]
            if not found:
                raise MutationError(f"{rel}: no {kind} state to remove")
            for file in found:
                file.unlink()
            return
        import torch

        from pytest_mlgates.checkpoint_io import safe_torch_load

        ckpt = safe_torch_load(target, mmap=False)
        keys = [k for k in RESUME_KEYS[kind] if isinstance(ckpt, dict) and k in ckpt]
        if not keys:
            raise MutationError(f"{rel}: no {kind} state to remove")
        for key in keys:
            del ckpt[key]
        torch.save(ckpt, target)

    return apply
