"""Data parallelism under ``torchrun``, kept to the few calls the training story needs.

``torchrun --nproc-per-node N -m model train ...`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`setup` reads them, starts the process group (gloo on CPU, nccl on
GPU) and says which device this rank uses. A plain ``python -m model train`` gets
``world_size == 1`` and none of this runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup() -> DistInfo:
    """Read torchrun's environment and start the process group; pick the device."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        device = f"cuda:{local_rank}" if world_size > 1 else "cuda"
        torch.cuda.set_device(local_rank if world_size > 1 else 0)
    else:
        device = "cpu"
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown(info: DistInfo) -> None:
    import torch

    if info.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(info: DistInfo) -> None:
    import torch

    if info.enabled:
        torch.distributed.barrier()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a decision: stop early, abort by gate, fail)."""
    import torch

    if not info.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    import torch

    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def sum_across_ranks(info: DistInfo, values: list[float]) -> list[float]:
    """Element-wise sum over ranks, in float64 (train loss and accuracy totals)."""
    import torch

    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64,
                     device=info.device if info.device.startswith("cuda") else "cpu")
    torch.distributed.all_reduce(t)
    return [float(v) for v in t.cpu()]


def broadcast_buffers(info: DistInfo, *modules: Any) -> None:
    """Rank 0's buffers (BatchNorm running stats) on every rank.

    DDP syncs buffers at the start of each forward, so after an epoch's last batch every
    rank holds its own running stats; evaluating with those would let ranks disagree.
    """
    import torch

    if not info.enabled:
        return
    for module in modules:
        if module is None:
            continue
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)
