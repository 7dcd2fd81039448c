"""One process or many (torchrun / DDP): process-group setup and a resumable, rank-sharded sampler."""

import math
import os
from typing import Iterator, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["setup", "teardown", "launch_env", "LaunchEnv", "ResumableSampler", "LossWrapper", "unwrap"]


class LaunchEnv(NamedTuple):
    """This process's place in a launch (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): ``(0, 1, 0)`` for one process."""
    rank: int
    world: int
    local_rank: int


def launch_env() -> LaunchEnv:
    """The launcher's environment, read here and nowhere else.

    Raises:
        ValueError: a variable that is not a whole number, or a rank outside the world.
    """
    names = (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"))
    try:
        env = LaunchEnv(*(int(os.environ.get(name, default)) for name, default in names))
    except ValueError as e:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be whole numbers ({e}); unset them for one process, or "
                         f"launch with torchrun") from e
    if env.world < 1 or not 0 <= env.rank < env.world:
        raise ValueError(f"RANK={env.rank}, WORLD_SIZE={env.world}: expected 0 <= RANK < WORLD_SIZE; unset them for "
                         f"one process, or launch with torchrun")
    return env


def setup(device: Optional[str] = None) -> Tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; starts the process group (NCCL on CUDA, gloo on CPU) when there are several
    processes."""
    rank, world, local = launch_env()
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def teardown() -> None:
    """Wait for every process, then end the process group (nothing to do for one process)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class LossWrapper(torch.nn.Module):
    """A model whose forward with labels is its training loss, so that DDP sees the whole training step:
    ``wrapper(video)`` is inference, ``wrapper(video, labels, progress)`` ``training_losses(...)["total"]``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, video: torch.Tensor, labels: Optional[torch.Tensor] = None, progress: float = 0.0):
        if labels is None:
            return self.inner(video)
        return self.inner.training_losses(video, labels, progress)["total"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP and :class:`LossWrapper`."""
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, LossWrapper)):
        model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model.inner
    return model


class ResumableSampler(Sampler):
    """A seeded shuffle per epoch (the same on every rank), padded to a multiple of the world size and sharded over
    ranks; ``start`` skips the samples already trained on."""

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(size / world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        order += order[:self.per_rank * self.world - self.size]  # pad so every rank has as many
        return iter(order[self.rank::self.world][self.start:])

    def __len__(self) -> int:
        # 0 when a run resumes at the very end of an epoch (a save on its last step, then a crash before the
        # epoch-end save): the loop then goes straight to the epoch's end, as the uninterrupted run did
        return max(0, self.per_rank - self.start)
