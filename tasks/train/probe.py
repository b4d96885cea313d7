"""The speed probe: a few real training steps of a member's U-Net on its device, then one
validation, checkpoint and overlay snapshot, timed, so the plan
(:mod:`segflow.tasks.train.budget`) knows what an epoch costs.

The steps are the loop's: the member's model, patches, loss, batch, DataLoader workers,
autocast dtype and memory format (:func:`~segflow.tasks.train.ensemble.member_parts`,
:func:`~segflow.tasks.train.loop.make_loader`, :func:`~segflow.tasks.train.steps.train_one_epoch`).
The first ``WARMUP_STEPS`` are not counted: they start the loader's workers, allocate the
activations and choose the kernels, which the loop pays once per run, not per step. Then steps
are timed for ``PROBE_SECONDS`` (at most ``MAX_STEPS``): a few steps of a large model, enough
of a small one to average out a busy machine's noise.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import torch
from torch import nn

from segflow.tasks.runtime.allocator import retain_freed_memory
from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.storage.grid import tile_grid
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.checkpoints import Progress, save_progress
from segflow.tasks.train.ensemble import MemberSettings, member_overlays, member_parts
from segflow.tasks.train.loop import LoopSettings, make_loader, make_stepper, resolve_compute
from segflow.tasks.train.patches import EpochSampler
from segflow.tasks.train.steps import Compute, CountingLoss, Stepper, train_one_epoch
from segflow.tasks.train.validation import validate

WARMUP_STEPS, PROBE_SECONDS, MAX_STEPS = 2, 2.0, 50
# The timed validation scores this many tiles, after one batch of warm-up tiles.
VALIDATION_TILES, WARMUP_TILES = 8, 4
_DTYPES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Throughput:
    """What the probe measured."""

    patches_per_second: float  # training windows (the balancing plan's), after the warm-up
    validation_seconds: float  # one epoch's validation: all its tiles, at the timed rate
    checkpoint_seconds: float  # one epoch's checkpoints (last.pt and best.pt)
    snapshot_seconds: float  # one overlay snapshot (predicting the val crops)
    seconds: float  # the probe's own wall time
    device: str  # e.g. "cpu bf16"


def validation_tiles(balance: Balance, members: MemberSettings, store: Store) -> int:
    """The tiles one epoch's validation scores (``validate``: the grid, at most
    ``val_max_tiles``)."""
    tile = members.loop.val_tile
    tiles = sum(len(tile_grid(store.mask(s).shape, tile)) for s in balance.val_ids)
    return min(tiles, members.loop.val_max_tiles)


def measure_throughput(
    balance: Balance,
    members: MemberSettings,
    *,
    warmup: int = WARMUP_STEPS,
    seconds: float = PROBE_SECONDS,
    max_steps: int = MAX_STEPS,
) -> Throughput:
    """Time member 0's training steps for `seconds` (at least one, at most `max_steps`)
    after `warmup` others, one validation (scaled to all of an epoch's tiles), one checkpoint
    and one overlay snapshot.

    A progress bar follows the steps (on a terminal). Nothing is kept: the checkpoints go to
    a temporary folder, and the members start from their own seeded weights.

    Raises
    ------
    ValueError
        `warmup` or `max_steps` below 1.
    """
    if warmup < 1 or max_steps < 1:
        raise ValueError(f"need warmup >= 1 and max_steps >= 1, got {warmup} and {max_steps}")
    started = time.perf_counter()
    loop = members.loop
    probe = replace(members, patches_per_epoch=(warmup + max_steps) * loop.batch_size)
    model, data, loss_fn = member_parts(balance, 0, probe)
    compute = resolve_compute(loop)
    retain_freed_memory()  # as the loop does: its steps are faster with it
    model.to(compute.device)
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(data, EpochSampler(len(data)), loop, compute.device)
    stepper = make_stepper(model, loop, len(loader), compute, None)
    rate = _timed_steps(model, loader, loss_fn, stepper, compute, warmup, seconds) * loop.batch_size
    del loader  # ends the loader's workers
    tiles = validation_tiles(balance, members, data.store)
    validation = _timed_validation(model, balance, data.store, loop, compute, tiles)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        save_progress(Path(folder), model, stepper, Progress(0, 0.0, 0.0, 0, 0), {}, members.config)
        checkpoint = time.perf_counter() - start
    start = time.perf_counter()
    member_overlays(model, balance, loop.val_tile)
    snapshot = time.perf_counter() - start
    device = f"{compute.device.type} {_DTYPES.get(compute.amp_dtype, str(compute.amp_dtype))}"
    return Throughput(rate, validation, checkpoint, snapshot, time.perf_counter() - started, device)


def _timed_steps(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    stepper: Stepper,
    compute: Compute,
    warmup: int,
    seconds: float,
) -> float:
    """Steps per second of the loop's steps over `loader`, after `warmup` untimed ones, for
    about `seconds` (at least one step; the loader's length bounds them)."""
    counting = CountingLoss(loss_fn).to(compute.device)
    batches = iter(loader)
    train_one_epoch(
        model, islice(batches, warmup), counting, stepper, compute, desc="probe warm-up"
    )
    ends: list[float] = []
    timed_from = time.perf_counter()
    train_one_epoch(
        model,
        batches,
        counting,
        stepper,
        compute,
        deadline=time.monotonic() + seconds,
        on_step=lambda step, loss: ends.append(time.perf_counter()),
        desc="probe",
    )
    return len(ends) / (ends[-1] - timed_from)


def _timed_validation(
    model: nn.Module,
    balance: Balance,
    store: Store,
    loop: LoopSettings,
    compute: Compute,
    tiles: int,
) -> float:
    """Seconds to validate `tiles` tiles: ``VALIDATION_TILES`` of them timed after
    ``WARMUP_TILES`` untimed, scaled."""

    def timed(count: int) -> float:
        start = time.perf_counter()
        validate(
            model,
            store,
            balance.val_ids,
            balance.normalization,
            tile=loop.val_tile,
            amp_dtype=compute.amp_dtype,
            max_tiles=count,
            binary_class=balance.binary_class,
        )
        return time.perf_counter() - start

    timed(min(tiles, WARMUP_TILES))
    count = min(tiles, VALIDATION_TILES)
    return timed(count) * tiles / count
