"""Data-parallel runs under ``torchrun``: process group, rank-aware helpers, cross-rank reductions.

``torchrun --nproc_per_node=N -m bench +loss=... +data=...`` starts N copies of the same run (same
run directory, named by the overrides). Each takes every N-th draw of the shared data order and
1/N of the evaluation cases; confusion matrices are summed and per-case rows gathered across ranks;
only rank 0 writes the record, checkpoints and W&B logs. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device_type: str) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0))
    )


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_lists(items: list[Any]) -> list[Any]:
    """Concatenate every rank's list, in rank order (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return items
    out: list[list[Any]] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]
