"""Several training processes (``torchrun``, DistributedDataParallel): the process group, sums over ranks,
the DDP wrapper and the end-of-run check that every rank holds the same weights.

Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`process_group` initialises the default group (gloo on CPU,
nccl on CUDA); a single process runs with ``rank 0, world size 1`` and every function here is a no-op.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["process_group", "rank_and_world", "all_reduce_", "wrap_ddp", "ranks_agree"]


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[None]:
    """Initialise the default process group from torchrun's environment for the ``with`` block (and destroy
    it after) unless there is one process only or a group exists already."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    here = world > 1 and dist.is_available() and not dist.is_initialized()
    if here:
        use_cuda = device_name != "cpu" and torch.cuda.is_available() and not device_name.startswith("cpu")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    try:
        yield
    finally:
        if here:
            dist.destroy_process_group()


def rank_and_world() -> Tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op for one process); returns it."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def wrap_ddp(module: torch.nn.Module, device: torch.device, find_unused_parameters: bool) -> torch.nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over ranks at every step)."""
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def ranks_agree(model: torch.nn.Module, world: int) -> bool:
    """True when every rank holds the same weights (sum and sum of squares of all parameters compared)."""
    if world <= 1:
        return True
    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])  # [n_params]
    chk = torch.tensor([float(flat.sum()), float((flat * flat).sum())], dtype=torch.float64)  # [2]
    gathered = [torch.zeros_like(chk) for _ in range(world)]
    dist.all_gather(gathered, chk)
    return all(torch.allclose(g, gathered[0], rtol=1e-10, atol=0) for g in gathered)
