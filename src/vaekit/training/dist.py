"""Distributed data parallel as a branch on torchrun's environment variables."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1).

    gloo on CPU, nccl on CUDA.  Returns rank info; a plain launch is rank 0 of 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo", rank=rank, world_size=world)
    if device_kind == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(rank, world, local)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= info.world_size
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """Leave the process group.  Drop every DistributedDataParallel wrapper first: a DDP reducer
    that outlives its gloo group aborts the process at exit ("terminate called without an active
    exception", about one run in ten on a loaded 2-core machine)."""
    if info.enabled and dist.is_initialized():
        gc.collect()  # DDP wrappers sit in reference cycles; collect them before the group goes
        dist.barrier()  # no rank leaves while another still talks to it (gloo aborts on a closed peer)
        dist.destroy_process_group()
