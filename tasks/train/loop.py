"""The training loop: ``fit`` trains epoch after epoch, validating and checkpointing each.

Checkpoints hold everything needed to continue exactly (model, optimizer, scheduler, scaler,
the EMA of the weights, epoch, early-stopping state, the data order is a function of the
epoch) and are written atomically, so a run killed at any moment resumes from its last
complete epoch.

In a process group (:mod:`segflow.tasks.train.distributed`) every rank runs :func:`fit` on its
share of each batch; rank 0 alone validates, checkpoints and reports, and decides when to stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from segflow.tasks.runtime.allocator import retain_freed_memory
from segflow.tasks.runtime.device import resolve_device, resolve_precision
from segflow.tasks.train.averaging import WeightAverage
from segflow.tasks.train.checkpoints import Progress, restore, resume_state, save_progress
from segflow.tasks.train.distributed import (
    Lockstep,
    current_ranks,
    data_parallel,
    pool_epoch,
    rank_batch,
    rank_compute,
    share,
)
from segflow.tasks.train.patches import EpochSampler, PatchDataset
from segflow.tasks.train.steps import (
    Compute,
    CountingLoss,
    Stepper,
    cosine_schedule,
    train_one_epoch,
    warmup_steps,
)
from segflow.tasks.train.validation import ValidationScores, validate


@dataclass(frozen=True)
class LoopSettings:
    """How :func:`fit` trains (built by ``TrainConfig.loop()``)."""

    epochs: int
    batch_size: int
    lr: float  # peak learning rate of AdamW
    weight_decay: float
    device: str  # auto | cpu | cuda
    precision: str  # auto | fp32 | bf16 | fp16
    channels_last: bool
    num_workers: int  # DataLoader worker processes
    val_max_tiles: int
    val_tile: int  # side of the validation tiles (the configured patch size)
    patience: int  # epochs without a better val Dice before stopping; 0: never
    max_seconds: float | None  # time budget of the whole run
    resume: bool  # continue from the checkpoint folder's last.pt
    nproc: int  # ranks `segflow train` starts (under torchrun: torchrun's); batch_size splits
    epoch_overhead: float = 0.0  # validation s per epoch expected before one is measured


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did; passed to the ``on_epoch`` callback (MLflow logging, progress)."""

    epoch: int
    train_loss: float
    scores: ValidationScores
    lr: float
    seconds: float  # training steps only
    patches_per_second: float
    best: bool
    epochs: int  # planned in all
    wall_seconds: float  # the whole epoch: training, validation, checkpoint
    seconds_left: float  # estimate: epochs left x this epoch's, at most the time budget left
    done: float  # share of the run done, 0..1: of the epochs, or of the time budget if further
    train_dice: float | None = None  # of the epoch's thresholded training batches
    train_iou: float | None = None


@dataclass(frozen=True)
class FitResult:
    """The end of a run: best epoch and score, and why it stopped."""

    epochs_done: int
    best_epoch: int
    best_dice: float
    last_dice: float
    stopped: str  # "epochs", "time budget" or "early stopping"


def resolve_compute(settings: LoopSettings) -> Compute:
    """The torch device and autocast dtype named by `settings`."""
    device = resolve_device(settings.device)
    return Compute(device, resolve_precision(settings.precision, device), settings.channels_last)


def make_loader(
    train_data: PatchDataset, sampler: EpochSampler, settings: LoopSettings, device: torch.device
) -> DataLoader:
    """Batches of `train_data` in the order of `sampler`, each the rank's share of
    ``settings.batch_size``; the incomplete last batch is dropped."""
    return DataLoader(
        train_data,
        batch_size=rank_batch(settings.batch_size, sampler.world),
        sampler=sampler,
        num_workers=settings.num_workers,
        persistent_workers=settings.num_workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )


def make_stepper(
    model: nn.Module,
    settings: LoopSettings,
    steps_per_epoch: int,
    compute: Compute,
    time_progress: Callable[[], float] | None,
    *,
    average: bool = True,
) -> Stepper:
    """AdamW, warm-up + cosine decay over all epochs (or over the time budget, through
    `time_progress`), a gradient scaler that only fp16 turns on, and with `average` an EMA of
    `model`'s weights (:class:`~segflow.tasks.train.averaging.WeightAverage`; `model` as it
    will be stepped, device and memory format set, not wrapped in DDP)."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    total = settings.epochs * steps_per_epoch
    schedule = cosine_schedule(
        total, warmup_steps(total, steps_per_epoch), time_progress=time_progress
    )
    scaler = torch.amp.GradScaler(compute.device.type, enabled=compute.amp_dtype == torch.float16)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return Stepper(optimizer, scheduler, scaler, WeightAverage(model) if average else None)


def _ahead(
    epoch: int, started: float, settings: LoopSettings, deadline: float | None
) -> tuple[int, float, float, float]:
    """The last fields of `epoch`'s :class:`EpochReport`, the epoch having started at `started`
    (``time.perf_counter()``): epochs planned, the epoch's seconds, estimated seconds left and
    share of the run done; the time budget, when set, bounds the third and may advance the
    fourth."""
    wall_seconds = time.perf_counter() - started
    left = (settings.epochs - epoch - 1) * wall_seconds
    done = (epoch + 1) / settings.epochs
    if deadline is not None and settings.max_seconds:
        budget_left = max(0.0, deadline - time.monotonic())
        left = min(left, budget_left)
        done = max(done, 1 - budget_left / settings.max_seconds)
    return settings.epochs, wall_seconds, left, min(1.0, done)


def stop_reason(progress: Progress, patience: int, deadline: float | None) -> str | None:
    """Why training stops after the epoch just done, or None to go on."""
    if deadline is not None and time.monotonic() > deadline:
        return "time budget"
    if patience and progress.stale >= patience:
        return "early stopping"
    return None


@dataclass(frozen=True)
class _Run:
    """What :func:`fit` keeps for the end of each epoch (rank 0's part)."""

    model: nn.Module
    train_data: PatchDataset
    val_ids: list[str]
    settings: LoopSettings
    compute: Compute
    stepper: Stepper
    checkpoint_dir: Path
    config: Mapping[str, Any]
    deadline: float | None
    on_epoch: Callable[[EpochReport], None] | None


def _close_epoch(
    run: _Run,
    progress: Progress,
    epoch: int,
    started: float,
    trained: tuple[float, int, float],
    train_scores: tuple[float | None, float | None],
) -> float:
    """Validate, checkpoint and report `epoch`, which started at `started`
    (``time.perf_counter()``) and `trained` (mean loss, patches, seconds) with the train
    Dice and IoU `train_scores`; returns the seconds validation took."""
    train_loss, seen, seconds = trained
    data, settings = run.train_data, run.settings
    scores = validate(
        run.model,
        data.store,
        run.val_ids,
        data.normalization,
        tile=settings.val_tile,
        amp_dtype=run.compute.amp_dtype,
        max_tiles=settings.val_max_tiles,
        binary_class=data.binary_class,
    )
    validation_seconds = time.perf_counter() - started - seconds
    improved = progress.update(epoch, scores.dice)
    # The data order is a pure function of (seed, epoch, index): this is its state.
    order = {"seed": data.plan.seed, "epoch": epoch, "length": len(data)}
    save_progress(run.checkpoint_dir, run.model, run.stepper, progress, order, run.config)
    if run.on_epoch is not None:
        lr = run.stepper.scheduler.get_last_lr()[0]
        ahead = (*_ahead(epoch, started, settings, run.deadline), *train_scores)
        speed = (seconds, seen / seconds)
        run.on_epoch(EpochReport(epoch, train_loss, scores, lr, *speed, improved, *ahead))
    return validation_seconds


def fit(
    model: nn.Module,
    train_data: PatchDataset,
    val_ids: list[str],
    loss_fn: nn.Module,
    settings: LoopSettings,
    *,
    checkpoint_dir: Path,
    config: Mapping[str, Any],
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> FitResult:
    """Train for ``settings.epochs`` epochs (or until early stopping or the time budget),
    validating each epoch on the `val_ids` images of `train_data`'s store.

    With ``settings.resume``, continues from ``checkpoint_dir/last.pt``; a finished run is
    extended by asking for more epochs (the cosine schedule then stretches over the new total).
    Every checkpoint stores `config`. In a process group, every rank calls it; rank 0 alone
    reads and writes checkpoints, validates and calls `on_epoch`.
    """
    retain_freed_memory()  # 3.9 -> 4.8 patches/s here: activations stay mapped between steps
    ranks = current_ranks()
    lockstep = Lockstep(ranks, settings.max_seconds)
    compute = rank_compute(resolve_compute(settings), ranks)
    model.to(compute.device)
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = CountingLoss(loss_fn).to(compute.device)  # the train Dice and IoU
    sampler = EpochSampler(len(train_data), ranks.rank, ranks.world)
    loader = make_loader(train_data, sampler, settings, compute.device)
    # Rank 0 alone averages the weights: it alone checkpoints and validates them.
    stepper = make_stepper(model, settings, len(loader), compute, lockstep.time_progress,
                           average=ranks.leader)  # fmt: skip
    state = resume_state(checkpoint_dir, settings.resume) if ranks.leader else None
    progress = restore(share(state, ranks), model, stepper)
    trained = data_parallel(model, compute, ranks)
    run = _Run(model, train_data, val_ids, settings, compute, stepper, checkpoint_dir, config,
               lockstep.deadline, on_epoch)  # fmt: skip
    stopped, validation_seconds = None, settings.epoch_overhead
    for epoch in range(progress.epoch + 1, settings.epochs):
        sampler.set_epoch(epoch)
        # Leave time for this epoch's validation, so the budget covers the whole run.
        train_deadline = None if run.deadline is None else run.deadline - validation_seconds
        batches, step_deadline = lockstep.epoch(loader, train_deadline)
        desc, started = f"epoch {epoch + 1}/{settings.epochs}", time.perf_counter()
        train_loss, seen = train_one_epoch(
            trained, batches, loss_fn, stepper, compute, deadline=step_deadline, desc=desc
        )
        seconds = time.perf_counter() - started
        train_loss, seen = pool_epoch(loss_fn, train_loss, seen, compute.device, ranks)
        train_scores = loss_fn.scores()  # on every rank: each one's counts start again
        if ranks.leader:
            epoch_done = (train_loss, seen, seconds)
            validation_seconds = _close_epoch(run, progress, epoch, started, epoch_done,
                                              train_scores)  # fmt: skip
            stopped = stop_reason(progress, settings.patience, train_deadline)
        stopped, progress = share((stopped, progress), ranks)  # rank 0 decides for all
        if stopped:
            break
    best = (progress.best_epoch, progress.best_dice)
    return FitResult(progress.epoch + 1, *best, progress.dice, stopped or "epochs")
