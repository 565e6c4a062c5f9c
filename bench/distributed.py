"""Process-group setup for ``torchrun``: NCCL on GPUs, gloo on CPU; rank 0 owns the run folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (a no-op for one process)."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run folder it created)."""
    if info.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, indexed by rank, on every rank (e.g. each process's random state, which only
    the main process writes to the checkpoint)."""
    if info.world_size == 1:
        return [obj]
    box: list[Any] = [None] * info.world_size
    dist.all_gather_object(box, obj)
    return box


def any_rank(flags: Sequence[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """For each of ``flags``, whether it is true on any rank (every rank gets the same answers, from one
    collective however many flags there are)."""
    if info.world_size == 1:
        return list(flags)
    box = torch.tensor([float(flag) for flag in flags], device=device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return [bool(value) for value in box.tolist()]


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
