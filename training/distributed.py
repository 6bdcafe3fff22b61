"""Multi-process training through ``torchrun`` (DistributedDataParallel); one process otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def start(device: torch.device) -> Processes:
    """Join the process group ``torchrun`` describes in the environment (NCCL on CUDA, gloo else)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def wrap(module: nn.Module, processes: Processes, device: torch.device) -> nn.Module:
    """DDP around ``module``; on CUDA batch norm is synchronised so statistics span the global batch.

    On CPU (gloo) PyTorch has no synchronised batch norm: each process normalises its own share,
    exactly as a single process would when it runs the shares separately and averages gradients.
    """
    if not processes.enabled:
        return module
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[device.index])
    return DistributedDataParallel(module)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def stop(processes: Processes) -> None:
    """Leave the group together: a process that tears down gloo while a peer still talks to it aborts."""
    if processes.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
