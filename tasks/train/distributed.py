"""Data-parallel training (PyTorch DistributedDataParallel): which rank this process is, and
what the ranks agree on.

Every rank trains on its share of each batch; DDP averages the gradients at each backward, so
all ranks hold the same weights. Rank 0 alone validates, checkpoints, logs and decides when to
stop; the others follow its decisions. Without a process group each function here is the
single-process identity: one rank, nothing communicated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segflow.tasks.train.steps import Compute, CountingLoss

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local: int = 0  # rank on this machine: its GPU

    @property
    def leader(self) -> bool:
        """Rank 0: validates, checkpoints, logs, decides."""
        return self.rank == 0


def current_ranks() -> Ranks:
    """The ranks of the default process group; one rank without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    rank = dist.get_rank()
    return Ranks(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def rank_batch(batch_size: int, world: int) -> int:
    """Each of `world` ranks' share of the effective batch `batch_size` (the patches of one
    step).

    Raises
    ------
    ValueError
        `batch_size` is not a multiple of `world`.
    """
    if batch_size % world:
        raise ValueError(
            f"batch size {batch_size} does not split over {world} ranks (use a multiple of {world})"
        )
    return batch_size // world


def rank_compute(compute: Compute, ranks: Ranks) -> Compute:
    """`compute` on the rank's own GPU, ``cuda:<local rank>``, when there are several ranks."""
    if compute.device.type != "cuda" or ranks.world == 1:
        return compute
    device = torch.device("cuda", ranks.local)
    torch.cuda.set_device(device)
    return replace(compute, device=device)


def data_parallel(model: nn.Module, compute: Compute, ranks: Ranks) -> nn.Module:
    """`model` in DistributedDataParallel (it starts from rank 0's weights and averages the
    gradients over the ranks at each backward); `model` itself on one rank."""
    if ranks.world == 1:
        return model
    devices = [compute.device] if compute.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=devices)


def share(value: T, ranks: Ranks) -> T:
    """Rank 0's `value` (picklable) on every rank."""
    if ranks.world == 1:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def pool_epoch(
    loss_fn: CountingLoss, mean_loss: float, seen: int, device: torch.device, ranks: Ranks
) -> tuple[float, int]:
    """The epoch's mean loss and patches over all ranks, from this rank's; the confusion
    counts of `loss_fn` are summed over the ranks in place (its train Dice then covers all)."""
    if ranks.world == 1:
        return mean_loss, seen
    totals = torch.tensor([mean_loss * seen, seen], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    if loss_fn.counts is not None:
        dist.all_reduce(loss_fn.counts)
    return float(totals[0] / totals[1].clamp(min=1)), int(totals[1])


class Until:
    """The batches of `loader` until ``stop()``, asked before each batch but the first."""

    def __init__(self, loader: Iterable[T], stop: Callable[[], bool]) -> None:
        self.loader, self.stop = loader, stop

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        for step, batch in enumerate(self.loader):
            if step and self.stop():
                return
            yield batch


class Lockstep:
    """The time budget of `max_seconds` (None: none) as every rank sees it: rank 0's clock.

    With one rank it is the live clock. With several, rank 0 shares after each step whether
    its deadline has passed and the share of the budget used, so that every rank ends the
    epoch after the same step and the learning-rate schedule (stretched over the budget)
    gives every rank the same rate.
    """

    def __init__(self, ranks: Ranks, max_seconds: float | None) -> None:
        self.ranks, self.max_seconds, self.used = ranks, max_seconds, 0.0
        self.started = time.monotonic()
        # on ``time.monotonic()``; rank 0's counts
        self.deadline = None if max_seconds is None else self.started + max_seconds

    def _live(self) -> float:
        return (time.monotonic() - self.started) / self.max_seconds  # type: ignore[operator]

    @property
    def time_progress(self) -> Callable[[], float] | None:
        """The share of the budget used, for the schedule; None without a budget."""
        if self.max_seconds is None:
            return None
        return self._live if self.ranks.world == 1 else lambda: self.used

    def epoch(
        self, loader: Iterable[T], deadline: float | None
    ) -> tuple[Iterable[T], float | None]:
        """`loader` and the deadline to hand ``train_one_epoch``: as given with one rank; with
        several, batches that end once rank 0 has passed `deadline`, and no deadline."""
        if deadline is None or self.ranks.world == 1:
            return loader, deadline
        return Until(loader, lambda: self._past(deadline)), None

    def _past(self, deadline: float) -> bool:
        past, self.used = share((time.monotonic() > deadline, self._live()), self.ranks)
        return past
