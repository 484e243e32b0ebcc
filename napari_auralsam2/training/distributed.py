"""Several training processes under torchrun: the process group, this process's device, gathering.

`auralsam2 train` / `eval` run in one process as usual. Under ``torchrun --nproc-per-node N`` (on
several nodes, the usual ``--nnodes/--node-rank/--rdzv-*`` way) torchrun sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK`` and the rendezvous address, and each process joins one process group:
NCCL when it runs on a GPU (GPU number ``LOCAL_RANK``), gloo on the CPU. The group is left when
the process exits.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

WORLD_SIZE_ENV, LOCAL_RANK_ENV = "WORLD_SIZE", "LOCAL_RANK"


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> Processes:
    """The process group this process is in (rank 0 of 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Processes()
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get(LOCAL_RANK_ENV, "0")))


def setup(device: str | None = None) -> tuple[Processes, torch.device]:
    """Join torchrun's process group (when started by torchrun with more than one process) and pick
    this process's device: ``cuda`` means GPU ``LOCAL_RANK`` (default: a GPU when there is one)."""
    world_size = int(os.environ.get(WORLD_SIZE_ENV, "1"))
    wanted = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if wanted.type == "cuda" and world_size > 1:
        wanted = torch.device("cuda", int(os.environ.get(LOCAL_RANK_ENV, "0")))
        torch.cuda.set_device(wanted)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if wanted.type == "cuda" else "gloo")
        atexit.register(_leave)
    return current(), wanted


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def backend() -> str:
    return dist.get_backend() if dist.is_initialized() else "none"


def gather(value: object) -> list[object]:
    """Every process's `value` (picklable), in rank order, on every process."""
    processes = current()
    if not processes.distributed:
        return [value]
    values: list[object] = [None] * processes.world_size
    dist.all_gather_object(values, value)
    return values


def sum_all(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over the processes (float64)."""
    if not current().distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
