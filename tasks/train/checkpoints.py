"""Checkpoints: atomic writes, weights-only reads, a run's progress, the weights it keeps."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segflow.tasks.train.steps import Stepper

log = logging.getLogger(__name__)


# Checkpoint temporaries end so; a resume removes those a killed run left.
PARTIAL_SUFFIX = ".partial"


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Write atomically: a crash leaves the previous checkpoint intact.

    The payload goes to a temporary file of its own (a unique name in the same folder, so two
    writers never share one) and is renamed over `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    partial = Path(name)
    try:
        os.fchmod(fd, 0o644)  # as a plain open() would under the usual umask, not 0600
        with os.fdopen(fd, "wb") as file:
            torch.save(dict(payload), file)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers, never arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


# The checkpoints a member may contribute: best val Dice, the last epoch's, the EMA's.
CANDIDATES = ("best", "last", "ema")


def kept_weights(weights: str, stopped: str) -> str:
    """Which checkpoint a member contributes: ``best``, ``last`` or ``ema``.

    ``auto`` keeps the last epoch's weights when the learning-rate schedule ran its course
    (all epochs, or the time budget it is stretched over), as nnU-Net does: the cosine decay
    ends there, and picking the best of noisy per-epoch val scores adds selection noise. After
    early stopping the run went past its best, so ``auto`` keeps the best-val weights. ``ema``
    (the moving average of the weights, :mod:`segflow.tasks.train.averaging`) is kept only
    when asked for.

    Raises
    ------
    ValueError
        `weights` is not ``auto``, ``best``, ``last`` or ``ema``.
    """
    if weights == "auto":
        return "best" if stopped == "early stopping" else "last"
    if weights not in CANDIDATES:
        raise ValueError(f"weights must be auto, best, last or ema, got {weights!r}")
    return weights


@dataclass
class Progress:
    """The last finished epoch and the early-stopping state; saved in every checkpoint."""

    epoch: int  # -1 before the first epoch
    dice: float  # val Dice of `epoch`; NaN after resuming a checkpoint of an earlier version
    best_dice: float
    best_epoch: int
    stale: int  # epochs since `best_epoch`

    def update(self, epoch: int, dice: float) -> bool:
        """Record the val Dice of `epoch`; True if it beats every earlier epoch."""
        self.epoch, self.dice = epoch, dice
        if dice > self.best_dice:
            self.best_dice, self.best_epoch, self.stale = dice, epoch, 0
            return True
        self.stale += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "dice": self.dice,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
        }


def resume_state(folder: Path, resume: bool) -> dict[str, Any] | None:
    """With `resume`, the checkpoint ``folder/last.pt`` (if any); otherwise None."""
    path = folder / "last.pt"
    if not (resume and path.exists()):
        return None
    state = load_checkpoint(path)
    log.info("resumed from %s at epoch %d", path, state["epoch"] + 1)
    return state


def restore(state: Mapping[str, Any] | None, model: nn.Module, stepper: Stepper) -> Progress:
    """Load the checkpoint `state` into `model` and `stepper` and return where it stood; a
    fresh start without one."""
    if state is None:
        return Progress(epoch=-1, dice=-1.0, best_dice=-1.0, best_epoch=-1, stale=0)
    model.load_state_dict(state["model"])
    stepper.load_state_dict(state)
    return Progress(
        epoch=state["epoch"],
        dice=state.get("dice", math.nan),  # not in checkpoints of earlier versions
        best_dice=state["best_dice"],
        best_epoch=state["best_epoch"],
        stale=state["stale"],
    )


def save_progress(
    folder: Path,
    model: nn.Module,
    stepper: Stepper,
    progress: Progress,
    sampler: Mapping[str, Any],
    config: Mapping[str, Any],
) -> None:
    """Write ``folder/last.pt`` (everything needed to continue: weights, `stepper` with its
    EMA, `progress`, the `sampler` state and `config`), after a better epoch ``best.pt``, and
    with an EMA ``ema.pt``. ``best.pt`` and ``ema.pt`` hold weights alone, no optimizer state,
    under ``model`` as ``last.pt``: any of the three loads into the model."""
    weights = model.state_dict()
    if progress.best_epoch == progress.epoch:
        save_checkpoint(folder / "best.pt", {"model": weights, "epoch": progress.epoch})
    if stepper.average is not None:
        average = {"model": stepper.average.module.state_dict(), "epoch": progress.epoch}
        save_checkpoint(folder / "ema.pt", {**average, "updates": stepper.average.updates})
    payload = {"model": weights, **stepper.state_dict(), **progress.state_dict()}
    save_checkpoint(
        folder / "last.pt", {**payload, "sampler": dict(sampler), "config": dict(config)}
    )
