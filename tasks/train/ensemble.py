"""Training the ensemble members: each one's plan, seed, loss and loop, in its MLflow run.

A member never contributes weights that do no better than a trivial predictor (every pixel one
class) on validation when another of its checkpoints (best, last, EMA) does better; a member
whose checkpoints all fail has not learned, and says so; its binary threshold is chosen on
validation (:mod:`segflow.tasks.train.keeping`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segflow.models.losses import build_loss, default_loss
from segflow.models.unet import UNet, UNetConfig
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.tracking.training import (
    log_epoch_metrics,
    log_member_outcome,
    log_overlays,
    member_run,
    start_member_run,
)
from segflow.tasks.train.augment import Augmentation
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.distributed_launch import spread
from segflow.tasks.train.keeping import Kept, keep_member_weights
from segflow.tasks.train.loop import EpochReport, FitResult, LoopSettings, fit
from segflow.tasks.train.patches import PatchDataset
from segflow.tasks.train.sampling import SamplingPlan, restrict
from segflow.tasks.train.training_run import RUN_ID_FILE, TrainingRun
from segflow.tasks.train.validation import overlay_tiles


@dataclass(frozen=True)
class MemberSettings:
    """How each member is trained (built by ``TrainConfig.members(unet)``)."""

    unet: UNetConfig
    loop: LoopSettings
    members: int  # ensemble size
    folds: bool  # member k leaves out every `members`-th train sample from k; else seeds only
    loss: str
    patches_per_epoch: int
    augmentation: Augmentation
    weights: str  # auto | best | last | ema: the checkpoint a member contributes
    seed: int  # member k uses seed + k
    config: Mapping[str, Any]  # the flow config and the U-Net's, saved in every checkpoint


@dataclass(frozen=True)
class MemberResult:
    """One trained model: where the weights it contributes are and how good they were on val."""

    member: int
    checkpoint: str
    run_id: str
    epochs_done: int
    best_epoch: int
    best_dice: float
    stopped: str
    kept: str  # "best", "last" or "ema": which weights `checkpoint` holds
    val_dice: float  # of the kept weights
    learned: bool  # val_dice beats trivial_dice strictly
    trivial: str  # the best trivial predictor on val: all_background, all_foreground, all_<class>
    trivial_dice: float  # its val Dice on the same tiles
    threshold: float  # binary: the val-chosen threshold of the kept weights (0.5 multi-class)
    threshold_dice: float  # their val Dice at it


def shortfall(member: MemberResult) -> str:
    """Why `member` has not learned, e.g. ``val Dice 0.0070 <= 0.0260 of predicting all
    foreground``."""
    predictor = member.trivial.replace("_", " ", 1)
    return f"val Dice {member.val_dice:.4f} <= {member.trivial_dice:.4f} of predicting {predictor}"


def member_plan(balance: Balance, member: int, settings: MemberSettings) -> SamplingPlan:
    """The balance step's plan with seed ``seed + member``; with folds, without the member's
    held-out train samples."""
    plan = balance.plan
    if settings.folds:
        held_out = set(balance.train_ids[member :: settings.members])
        plan = restrict(plan, [s for s in balance.train_ids if s not in held_out])
    return replace(plan, seed=settings.seed + member)


def member_loss(balance: Balance, plan: SamplingPlan, name: str) -> nn.Module:
    """Loss `name` (``auto``: see :func:`default_loss`), weighted by the plan's class weights
    when it has some (``pos_weight`` of a binary model: ``weights[1] / weights[0]``)."""
    weights = plan.class_weights
    binary = balance.binary_class is not None
    return build_loss(
        default_loss(name, balance.out_channels),
        num_classes=balance.out_channels,
        pos_weight=(weights[1] / weights[0]) if (weights and binary) else None,
        class_weights=torch.tensor(weights) if (weights and not binary) else None,
    )


def member_parts(
    balance: Balance, member: int, settings: MemberSettings
) -> tuple[UNet, PatchDataset, nn.Module]:
    """Member `member`'s initial model (seeded), patches and loss: the same on every rank."""
    plan = member_plan(balance, member, settings)
    torch.manual_seed(settings.seed + member)
    model = UNet(settings.unet)
    data = PatchDataset(
        balance.store,
        plan,
        balance.locations,
        balance.normalization,
        length=settings.patches_per_epoch,
        augmentation=settings.augmentation,
        binary_class=balance.binary_class,
    )
    return model, data, member_loss(balance, plan, settings.loss)


def fit_rank(balance: Balance, member: int, folder: Path, settings: MemberSettings) -> None:
    """Member `member`'s training on a rank other than 0 (the work :func:`fit_member` sends)."""
    model, data, loss_fn = member_parts(balance, member, settings)
    fit(model, data, balance.val_ids, loss_fn, settings.loop, checkpoint_dir=folder,
        config=settings.config)  # fmt: skip


def fit_member(
    balance: Balance,
    member: int,
    folder: Path,
    settings: MemberSettings,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_snapshot: Callable[[nn.Module, EpochReport], None] | None = None,
) -> tuple[UNet, FitResult, Kept]:
    """Train member `member` with checkpoints in `folder` (no tracking); ``on_epoch`` and then
    ``on_snapshot`` (with the model in training) follow each epoch. With
    ``settings.loop.nproc`` > 1 (or under torchrun) this process is rank 0 of a data-parallel
    run (:func:`~segflow.tasks.train.distributed_launch.spread`).

    Returns
    -------
    tuple
        The model on the CPU in fp32 with the weights :func:`keep_member_weights` picks, the
        fit result, and those weights' outcome.
    """
    model, data, loss_fn = member_parts(balance, member, settings)

    def epoch_done(report: EpochReport) -> None:
        if on_epoch is not None:
            on_epoch(report)
        if on_snapshot is not None:
            on_snapshot(model, report)

    job = partial(fit_rank, balance, member, folder, settings)
    with spread(settings.loop.nproc, settings.loop.device, job):
        result = fit(
            model,
            data,
            balance.val_ids,
            loss_fn,
            settings.loop,
            checkpoint_dir=folder,
            config=settings.config,
            on_epoch=epoch_done,
        )
    kept = keep_member_weights(model, folder, result, settings.weights, balance, settings.loop)
    return model.cpu().float(), result, kept


def epoch_metrics(report: EpochReport, class_names: list[str]) -> dict[str, float]:
    """The MLflow metrics of one epoch, grouped ``train/`` (loss, Dice and IoU of the training
    batches, LR, speed) and ``val/`` (scores, per class when known)."""
    metrics = {
        "train/loss": report.train_loss,
        "train/lr": report.lr,
        "train/patches_per_second": report.patches_per_second,
        "val/dice": report.scores.dice,
        "val/iou": report.scores.iou,
        "val/bce": report.scores.bce,
    }
    if report.train_dice is not None and report.train_iou is not None:
        metrics |= {"train/dice": report.train_dice, "train/iou": report.train_iou}
    per_class = report.scores.per_class_dice
    if len(per_class) == len(class_names):
        metrics |= {f"val/dice.{n}": d for n, d in zip(class_names, per_class, strict=True)}
    return metrics


def overlay_epochs(epochs: int) -> set[int]:
    """The epochs (0-based) whose overlays are logged: the first, every quarter, the last."""
    return {round(q * (epochs - 1)) for q in (0, 0.25, 0.5, 0.75, 1)}


def member_overlays(
    model: nn.Module, balance: Balance, tile: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Overlay crops of the val images, predicted by `model` in `tile`-sized tiles (see
    ``overlay_tiles``)."""
    return overlay_tiles(
        model,
        open_dataset(balance.store),
        balance.val_ids,
        balance.normalization,
        tile=tile,
        binary_class=balance.binary_class,
    )


def _member_run_id(run: TrainingRun, member: int, members: int, folder: Path) -> str:
    """The training run itself for a single model, else the member's nested run, created
    once and named in `folder` so that resumes reopen it."""
    if members == 1:
        return run.run_id
    marker = folder / RUN_ID_FILE
    if marker.exists():
        return marker.read_text().strip()
    run_id = start_member_run(run.run_id, member)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_id)
    return run_id


def train_model(
    balance: Balance,
    member: int,
    run: TrainingRun,
    settings: MemberSettings,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> MemberResult:
    """:func:`fit_member` in the member's MLflow run, with per-epoch metrics, overlays of val
    crops at :func:`overlay_epochs` and of the kept weights, and the final scores; checkpoints
    go to ``run.folder/member_<member>``. ``on_epoch`` (progress) follows each epoch's metrics."""
    folder = run.folder / f"member_{member}"
    run_id = _member_run_id(run, member, settings.members, folder)

    def epoch_done(report: EpochReport) -> None:
        log_epoch_metrics(epoch_metrics(report, balance.class_names), report.epoch)
        if on_epoch is not None:
            on_epoch(report)

    def snapshot(model: nn.Module, report: EpochReport) -> None:
        if report.epoch in overlay_epochs(report.epochs) or report.done >= 1:
            log_overlays(
                member_overlays(model, balance, settings.loop.val_tile), f"epoch_{report.epoch + 1}"
            )

    with member_run(run_id, member):
        model, result, kept = fit_member(balance, member, folder, settings, epoch_done, snapshot)
        log_overlays(
            member_overlays(model, balance, settings.loop.val_tile), f"kept_{kept.weights}"
        )
        summary = {"best_epoch": result.best_epoch + 1, "best_val_dice": result.best_dice}
        summary |= {"kept_weights": kept.weights, "kept_val_dice": kept.val_dice}
        summary |= {f"val_dice.{name}": dice for name, dice in kept.candidates.items()}
        summary |= {"val_threshold": kept.threshold, "val_dice_at_threshold": kept.threshold_dice}
        trivial = {f"val_trivial_dice.{n}": d for n, d in kept.trivial_dice.items()}
        summary |= trivial | {"val_trivial_dice": max(trivial.values())}
        log_member_outcome(summary, kept.learned)
    return MemberResult(
        member,
        str(folder / f"{kept.weights}.pt"),
        run_id,
        result.epochs_done,
        result.best_epoch,
        result.best_dice,
        result.stopped,
        kept.weights,
        kept.val_dice,
        kept.learned,
        kept.trivial,
        kept.trivial_dice[kept.trivial],
        kept.threshold,
        kept.threshold_dice,
    )
