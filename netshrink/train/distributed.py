"""DistributedDataParallel plumbing for ``fit``: process group, wrapping, collectives.

``fit`` runs data parallel when ``RANK`` and ``WORLD_SIZE`` are set (as ``torchrun`` sets them).
Every rank draws the same seeded permutation; rank ``r`` of ``W`` takes the strided share
``batch[r::W]`` of each global batch (``batches.py``: DistributedSampler's split, applied per
batch), so the global batch and the order of samples are those of a one-process run. Gradients
are averaged by DDP; ``fit`` weights each rank's mean loss by its share of the batch so an uneven
last batch still gives the one-process gradient.

BatchNorm stays local: each rank normalises with its own share's statistics, and DDP broadcasts
rank 0's running statistics at every forward; ``fit`` broadcasts them once more after each epoch's
last step, so every rank evaluates, checkpoints and returns the same model. Convert with
``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` before ``fit`` for global batch statistics.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import nn

from netshrink.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; ``world_size == 1`` and ``rank == 0`` when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False

    @property
    def enabled(self) -> bool:
        return dist.is_available() and dist.is_initialized() and self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group named by the torchrun environment; return it and this rank's device."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(), torch.device(device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        created = True
    return DistInfo(rank, world, local_rank, created), dev


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed, else unchanged."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_batch(batch_size: int, info: DistInfo) -> None:
    """The global batch must split evenly across ranks."""
    if batch_size % info.world_size:
        raise ConfigError(f"batch_size {batch_size} does not divide across {info.world_size} "
                          "processes; choose a multiple of the number of processes")


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum across ranks (in place, returned); no-op when not distributed."""
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics); no-op when not distributed."""
    if info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_gather(tensor: torch.Tensor, info: DistInfo, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, on the CPU, in rank order."""
    if not info.enabled:
        return [tensor.cpu()]
    tensor = tensor.to(device if dist.get_backend() == "nccl" else "cpu")
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor)
    return [p.cpu() for p in parts]
