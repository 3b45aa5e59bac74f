"""Many processes, one run: the torchrun environment, the process group, and who does what.

torchrun starts one process per device and tells each its RANK (among all processes), LOCAL_RANK
(among those on its node) and WORLD_SIZE in the environment; with one process none of this is
set and every helper here does nothing. Training joins a process group (gloo on CPU, NCCL on
CUDA) for DistributedDataParallel; generation needs none: each process takes every W-th prompt.
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import DiffuseError


@dataclass(frozen=True)
class World:
    rank: int = 0        # this process among all of them (RANK)
    size: int = 1        # number of processes (WORLD_SIZE)
    local_rank: int = 0  # this process among those on its node (LOCAL_RANK): picks its GPU

    @classmethod
    def from_env(cls, env=os.environ) -> "World":
        try:
            world = cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
        except ValueError:
            raise DiffuseError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
        if not 0 <= world.rank < world.size:
            raise DiffuseError(f"RANK {world.rank} is not below WORLD_SIZE {world.size}")
        return world

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the logs, previews and checkpoints; the others only compute."""
        return self.rank == 0


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


@contextlib.contextmanager
def process_group(world: World, device: str):
    """Join the run's process group for the duration (torchrun's env:// rendezvous)."""
    if world.size == 1:
        yield
        return
    # Binding NCCL to this process's GPU up front lets its collectives (barrier included) skip guessing.
    device_id = torch.device(device) if device.startswith("cuda") else None
    dist.init_process_group(backend_for(device), device_id=device_id)
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard(n: int, world: World) -> range:
    """This process's share of n items: i with i % size == rank (prompts, for generation)."""
    return range(world.rank, n, world.size)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over all processes (every process must call it)."""
    if not active():
        return x
    x = x.detach().float().clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


def any_rank(flag: bool, device: str) -> bool:
    """True on every process if it is true on any (so all stop at the same step)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if active():
        dist.barrier()
