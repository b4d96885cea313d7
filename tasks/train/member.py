"""Training one model (an ensemble member): data, loss and loop from the balance step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from segflow.models.losses import build_loss
from segflow.models.unet import UNet, UNetConfig
from segflow.tasks.runtime.device import resolve_device, resolve_precision
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.grid import tile_grid
from segflow.tasks.tracking.overlays import overlay
from segflow.tasks.train.augment import Augmentation
from segflow.tasks.train.loop import EpochReport, FitResult, fit, kept_weights, load_checkpoint
from segflow.tasks.train.patches import PatchDataset
from segflow.tasks.train.sampling import (
    Balance,
    restrict,
)


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
    kept: str  # "best" or "last": which weights `checkpoint` holds
    val_dice: float  # of the kept weights


def _member_run(parent_run_id: str, member: int, members: int, folder: Path) -> str:
    """The MLflow run of a member: the parent run itself, or a nested run kept across resumes."""
    if members == 1:
        return parent_run_id
    marker = folder / "mlflow_run_id"
    if marker.exists():
        return marker.read_text().strip()
    with mlflow.start_run(run_id=parent_run_id):
        run = mlflow.start_run(run_name=f"member-{member}", nested=True)
        mlflow.end_run()
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(run.info.run_id)
    return run.info.run_id


def _log_epoch(report: EpochReport, class_names: list[str]) -> None:
    metrics = {
        "train_loss": report.train_loss,
        "val_dice": report.scores.dice,
        "val_iou": report.scores.iou,
        "val_bce": report.scores.bce,
        "lr": report.lr,
        "patches_per_second": report.patches_per_second,
    }
    if len(report.scores.per_class_dice) == len(class_names):
        metrics |= {
            f"val_dice.{n}": d
            for n, d in zip(class_names, report.scores.per_class_dice, strict=True)
        }
    mlflow.log_metrics(metrics, step=report.epoch)


@torch.no_grad()
def _log_overlays(model: UNet, balance: Balance, store_path: str, tile: int, limit: int = 3):
    """Input | truth | prediction panels of the val tiles with the most foreground."""
    store = open_dataset(store_path)
    model.eval()
    candidates = []
    for sample_id in balance.val_ids[:8]:
        for y, x in tile_grid(store.mask(sample_id).shape, tile)[:16]:
            mask = np.asarray(store.mask(sample_id)[y : y + tile, x : x + tile])
            candidates.append((int((mask > 0).sum()), sample_id, y, x))
    for _, sample_id, y, x in sorted(candidates, reverse=True)[:limit]:
        image = np.asarray(store.image(sample_id)[:, y : y + tile, x : x + tile])
        truth = np.asarray(store.mask(sample_id)[y : y + tile, x : x + tile])
        if balance.binary_class is not None:
            truth = (truth == balance.binary_class).astype(np.uint8)
        logits = model(torch.from_numpy(balance.normalization.apply(image))[None].float())
        pred = (logits[0, 0] > 0) if logits.shape[1] == 1 else logits[0].argmax(0)
        panel = overlay(image, truth, pred.numpy().astype(np.uint8))
        mlflow.log_image(panel, artifact_file=f"overlays/{sample_id}_{y}_{x}.png")


def fit_member(
    balance: Balance,
    *,
    store_path: str,
    folder: Path,
    member: int,
    members: int,
    folds: bool,
    unet: UNetConfig,
    loss: str,
    epochs: int,
    patches_per_epoch: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    elastic: bool,
    device: str,
    precision: str,
    channels_last: bool,
    num_workers: int,
    val_max_tiles: int,
    patience: int,
    max_seconds: float | None,
    resume: bool,
    seed: int,
    config: dict[str, Any],
    weights: str = "auto",
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> tuple[UNet, FitResult, str]:
    """Train one model (no tracking); returns it on CPU with the weights :func:`kept_weights`
    picks, the fit result and which weights those are (``best`` or ``last``).

    Member k uses seed ``seed + k``; with `folds`, it also leaves out every `members`-th train
    sample starting at k. Checkpoints go to `folder`.
    """
    plan = balance.plan
    if folds:
        held_out = set(balance.train_ids[member::members])
        plan = restrict(plan, [s for s in balance.train_ids if s not in held_out])
    plan = replace(plan, seed=seed + member)
    torch.manual_seed(seed + member)
    model = UNet(unet)
    torch_device = resolve_device(device)
    loss_weights = plan.class_weights
    binary = balance.binary_class is not None
    loss_fn = build_loss(
        loss,
        num_classes=1 if binary else len(balance.class_names),
        pos_weight=(loss_weights[1] / loss_weights[0]) if (loss_weights and binary) else None,
        class_weights=torch.tensor(loss_weights) if (loss_weights and not binary) else None,
    ).to(torch_device)
    data = PatchDataset(
        store_path,
        plan,
        balance.locations,
        balance.normalization,
        length=patches_per_epoch,
        augmentation=Augmentation(elastic=elastic),
        binary_class=balance.binary_class,
    )
    result = fit(
        model,
        data,
        store=open_dataset(store_path),
        val_ids=balance.val_ids,
        normalization=balance.normalization,
        loss_fn=loss_fn,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        device=torch_device,
        amp_dtype=resolve_precision(precision, torch_device),
        channels_last=channels_last,
        num_workers=num_workers,
        checkpoint_dir=folder,
        config=config,
        resume=resume,
        patience=patience,
        max_seconds=max_seconds,
        val_tile=plan.patch_size,
        val_max_tiles=val_max_tiles,
        binary_class=balance.binary_class,
        on_epoch=on_epoch,
    )
    kept = kept_weights(weights, result.stopped)
    model.load_state_dict(load_checkpoint(folder / f"{kept}.pt")["model"])
    return model.cpu().float(), result, kept


def train_member(
    balance: Balance,
    *,
    folder: Path,
    parent_run_id: str,
    member: int,
    members: int,
    **options: Any,
) -> MemberResult:
    """:func:`fit_member` inside the member's MLflow run: per-epoch metrics and overlays."""
    folder = folder / f"member_{member}"
    run_id = _member_run(parent_run_id, member, members, folder)
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tag("member", member)
        model, result, kept = fit_member(
            balance,
            folder=folder,
            member=member,
            members=members,
            on_epoch=lambda report: _log_epoch(report, balance.class_names),
            **options,
        )
        _log_overlays(model, balance, options["store_path"], balance.plan.patch_size)
        val_dice = result.best_dice if kept == "best" else result.last_dice
        mlflow.log_metrics(
            {
                "best_val_dice": result.best_dice,
                "best_epoch": result.best_epoch,
                "kept_val_dice": val_dice,
            }
        )
        mlflow.set_tag("segflow.kept_weights", kept)
    return MemberResult(
        member,
        str(folder / f"{kept}.pt"),
        run_id,
        result.epochs_done,
        result.best_epoch,
        result.best_dice,
        result.stopped,
        kept,
        val_dice,
    )
