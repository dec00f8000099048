"""Device choice and the process group of a distributed run.

Launched with `torchrun --nproc_per_node N -m model_training train ...`, each process trains on
its shard of the data with DistributedDataParallel (NCCL on GPU, gloo on CPU); rank 0 validates,
writes the run directory and decides early stopping for everyone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N`; plain `cuda` means this process's GPU under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank:
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available; use cpu or auto")
    return device


@dataclass
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


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun process group (from its environment variables); a single process
    when there is none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return Dist(rank=rank, world=world, local_rank=local)


def wrap_model(model: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    """The model the training step runs: DistributedDataParallel around it when distributed."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def decision_of_rank0(decision: bool, dist: Dist) -> bool:
    """Rank 0's `decision` (for example: stop early), on every process."""
    flag = torch.zeros(1)
    if decision:
        flag[0] = 1
    if dist.enabled:
        import torch.distributed as tdist

        # NCCL broadcasts CUDA tensors only; gloo takes CPU ones.
        if tdist.get_backend() == "nccl":
            flag = flag.to(f"cuda:{dist.local_rank}")
        tdist.broadcast(flag, src=0)
    return bool(flag.item() > 0)


def leave(dist: Dist) -> None:
    """Wait for every process, then leave the process group."""
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
