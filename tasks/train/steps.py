"""Optimizer steps: where tensors are computed, what a step updates, the LR schedule, one epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from segflow.tasks.runtime.device import autocast
from segflow.tasks.train.averaging import WeightAverage


@dataclass(frozen=True)
class Compute:
    """Where and how tensors are computed (``fit`` resolves it from its settings)."""

    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None: fp32
    channels_last: bool


@dataclass(frozen=True)
class Stepper:
    """What an optimizer step updates; its state goes into every checkpoint."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    average: WeightAverage | None = None  # the EMA of the weights (rank 0's); None: none kept

    def state_dict(self) -> dict[str, Any]:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if self.average is not None:
            state["ema"] = self.average.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load `state`; the EMA starts again from the model's weights (load them first) when
        `state` has none (a checkpoint of an earlier version)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.average is not None:
            if "ema" in state:
                self.average.load_state_dict(state["ema"])
            else:
                self.average.reset()


# The linear warm-up: one epoch, at most WARMUP_STEPS and WARMUP_SHARE of the run's steps. On a
# 2-core CPU without bf16 a 10-minute budget is ~60 steps of batch 8, and a warm-up of one epoch
# (31 steps) kept the learning rate low for half the run (benchmarks/README.md, "Quality at equal
# time").
WARMUP_STEPS, WARMUP_SHARE = 100, 0.05


def warmup_steps(total_steps: int, steps_per_epoch: int) -> int:
    """The warm-up of a run of `total_steps` in epochs of `steps_per_epoch` (at least 1)."""
    return max(1, min(WARMUP_STEPS, steps_per_epoch, int(WARMUP_SHARE * total_steps)))


def cosine_schedule(
    total_steps: int, warmup_steps: int, time_progress: Callable[[], float] | None = None
) -> Callable[[int], float]:
    """LR factor: linear warm-up, then cosine decay to 1 % of the base LR.

    Progress is ``step / total_steps``, or, with a time budget, the larger of that and
    `time_progress()` (elapsed / budget), so the decay completes when the budget runs out.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if time_progress is not None:
            progress = max(progress, time_progress())
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    stepper: Stepper,
    compute: Compute,
    *,
    deadline: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
    desc: str = "train",
) -> tuple[float, int]:
    """Train over `loader` once; returns (mean loss, patches seen).

    Batches are ``(images (N, C, P, P) float32, targets)``, from a DataLoader (its length sizes
    the progress bar) or any iterable of them. Stops early, between steps, when one more step
    (as long as the mean so far) would end past `deadline` (``time.monotonic()``);
    ``on_step(step, loss)`` follows every step, after the update of ``stepper.average`` (the
    EMA of the weights), if any.
    """
    model.train()
    total, seen = 0.0, 0
    memory_format = torch.channels_last if compute.channels_last else torch.contiguous_format
    bar = tqdm(loader, desc=desc, leave=False, disable=None, unit="batch")  # off when not a TTY
    started = time.monotonic()
    for step, (images, targets) in enumerate(bar):
        images = images.to(compute.device, non_blocking=True)
        images = images.contiguous(memory_format=memory_format)
        targets = targets.to(compute.device, non_blocking=True)
        stepper.optimizer.zero_grad(set_to_none=True)
        with autocast(compute.device, compute.amp_dtype):
            loss = loss_fn(model(images), targets)
        stepper.scaler.scale(loss).backward()
        stepper.scaler.step(stepper.optimizer)
        stepper.scaler.update()
        stepper.scheduler.step()
        if stepper.average is not None:
            stepper.average.update()
        value = loss.item()
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        total += value * len(images)
        seen += len(images)
        if on_step is not None:
            on_step(step, value)
        if deadline is not None and _past(deadline, started, step + 1):
            break
    return total / max(seen, 1), seen


def _past(deadline: float, started: float, steps: int) -> bool:
    """Whether one more step, as long as the mean of the `steps` since `started`
    (``time.monotonic()``), would end past `deadline`."""
    now = time.monotonic()
    return now + (now - started) / steps > deadline


class CountingLoss(nn.Module):
    """`loss_fn` that also accumulates the confusion counts of the batches' thresholded logits
    against their targets, on the device (no sync per step): the train Dice and IoU, cheaply.
    """

    def __init__(self, loss_fn: nn.Module) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        self.counts: torch.Tensor | None = None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of logits ``(N, K, P, P)`` against targets ``(N, 1, P, P)`` 0/1 (K = 1) or
        ``(N, P, P)`` class ids; their counts are added."""
        with torch.no_grad():
            if logits.shape[1] == 1:
                pred, target, classes = logits[:, 0] > 0, targets[:, 0] > 0.5, 2
            else:
                pred, target, classes = logits.argmax(1), targets, logits.shape[1]
            flat = target.reshape(-1).long() * classes + pred.reshape(-1).long()
            matrix = torch.bincount(flat, minlength=classes**2).reshape(classes, classes)
            self.counts = matrix if self.counts is None else self.counts + matrix
        return self.loss_fn(logits, targets)

    def scores(self) -> tuple[float | None, float | None]:
        """Foreground Dice and IoU (mean over classes > 0) of the batches since the last call;
        Nones when there were none."""
        if self.counts is None:
            return None, None
        matrix, self.counts = self.counts.double().cpu(), None
        tp = matrix.diagonal()[1:]
        fp, fn = matrix.sum(0)[1:] - tp, matrix.sum(1)[1:] - tp
        dice = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), 1.0)
        iou = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp(min=1), 1.0)
        return float(dice.mean()), float(iou.mean())
