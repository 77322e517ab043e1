"""Distributed data parallel through torchrun: process-group set-up and metric reduction."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine (torchrun's LOCAL_WORLD_SIZE): they share its CPU cores

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes in the environment: NCCL on CUDA, Gloo on CPU."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(
                f"Distributed training needs the torchrun environment ({var} is not set): launch with `torchrun --nproc-per-node N -m vislab train ...`."
            )
    info = DistInfo(
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ["LOCAL_RANK"]),
        int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])),
    )
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            rank=info.rank,
            world_size=info.world_size,
            device_id=device if use_cuda else None,
        )
    return info, device


def reduce_sums(*values: torch.Tensor | int | float) -> list[float]:
    """Sum each value over all ranks (a no-op outside a process group); returns Python floats."""
    if not values:
        return []
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
    # One float64 vector, one collective: counts below 2**53 stay exact.
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(packed)
    return packed.tolist()


def broadcast_object(obj, src: int = 0):
    """`obj` of rank `src`, on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
