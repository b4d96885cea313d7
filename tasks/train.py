"""Training stage: the balance step, training one (ensemble member) model, registering it.

Plain functions do the work; the ``@task`` wrappers at the bottom add logging.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.losses import build_loss
from models.unet import UNet, UNetConfig
from tasks.augment import Augmentation
from tasks.balance import SamplingPlan, build_plan, foreground_locations, restrict
from tasks.balance import class_weights as balanced_class_weights
from tasks.dataset import open_dataset
from tasks.device import resolve_device, resolve_precision
from tasks.model_bundle import save_bundle
from tasks.patches import (
    Normalization,
    PatchDataset,
    channel_statistics,
    sampled_class_fractions,
)
from tasks.store import write_index
from tasks.tracking import (
    configure_tracking,
    dataset_fingerprint,
    flat_params,
    log_bundle_model,
    log_class_distribution,
    overlay,
)
from tasks.training import EpochReport, FitResult, fit, kept_weights, load_checkpoint
from tasks.validation import tile_grid


@dataclass
class Balance:
    """Output of the balance step: the plan and everything training needs besides the data."""

    plan: SamplingPlan
    normalization: Normalization
    locations: dict[str, dict[int, np.ndarray]]
    train_ids: list[str]
    val_ids: list[str]
    class_names: list[str]
    binary_class: int | None  # the foreground class of a binary model, None for multi-class
    in_channels: int
    fractions_before: list[float] = field(default_factory=list)
    fractions_after: list[float] = field(default_factory=list)

    @property
    def out_channels(self) -> int:
        return 1 if self.binary_class is not None else len(self.class_names)


def prepare_balance(
    store_path: str,
    *,
    patch_size: int,
    fg_oversample: float,
    balance: bool,
    class_weights: bool,
    weight_cap: float,
    target_class: int | None,
    seed: int,
    probe_patches: int = 256,
) -> Balance:
    """Build the sampling plan from the store's class counts and record it in the store.

    Raises
    ------
    ValueError
        Empty train or val split, or a `target_class` the store does not have.
    """
    store = open_dataset(store_path)
    train_ids, val_ids = store.samples("train"), store.samples("val")
    if not train_ids or not val_ids:
        raise ValueError(
            f"{store_path}: need samples in train and val, got {len(train_ids)} and "
            f"{len(val_ids)}; re-ingest with a val_fraction > 0"
        )
    num_classes = store.num_classes
    if target_class is not None and target_class >= num_classes:
        raise ValueError(f"target_class {target_class} not in the store's 1..{num_classes - 1}")
    binary_class = target_class if target_class is not None else (1 if num_classes == 2 else None)
    fg_classes = (binary_class,) if binary_class is not None else None
    counts = {s: store.class_counts(s) for s in train_ids}
    plan = build_plan(
        counts,
        patch_size=patch_size,
        fg_oversample=fg_oversample,
        seed=seed,
        balance=balance,
        fg_classes=fg_classes,
    )
    if class_weights:
        totals = np.sum([counts[s] for s in train_ids], axis=0)
        if binary_class is not None:  # a binary model: the class against everything else
            totals = np.array([totals.sum() - totals[binary_class], totals[binary_class]])
        plan = replace(plan, class_weights=balanced_class_weights(totals, cap=weight_cap))
    locations = {
        s: foreground_locations(store.mask(s), plan.fg_classes, counts[s], seed=seed)
        for s in train_ids
    }
    uniform = build_plan(counts, patch_size=patch_size, seed=seed, balance=False)
    result = Balance(
        plan=plan,
        normalization=channel_statistics(store, train_ids, seed=seed),
        locations=locations,
        train_ids=train_ids,
        val_ids=val_ids,
        class_names=store.class_names,
        binary_class=binary_class,
        in_channels=int(store.image(train_ids[0]).shape[0]),
        fractions_before=[
            float(f)
            for f in sampled_class_fractions(
                store, uniform, locations, num_classes, patches=probe_patches
            )
        ],
        fractions_after=[
            float(f)
            for f in sampled_class_fractions(
                store, plan, locations, num_classes, patches=probe_patches
            )
        ],
    )
    write_index(store_path, {"sampling_plan": plan.to_dict()})
    return result


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


def register_model(
    balance: Balance,
    members: list[MemberResult],
    *,
    unet: UNetConfig,
    parent_run_id: str,
    registered_name: str | None,
    store_path: str,
) -> str:
    """Log the (ensemble) model to the parent run and register it; returns its model URI."""
    states = [load_checkpoint(Path(m.checkpoint))["model"] for m in members]
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=parent_run_id):
        bundle = save_bundle(
            Path(tmp) / "bundle",
            config=unet,
            state_dicts=states,
            mean=balance.normalization.mean,
            std=balance.normalization.std,
            class_names=balance.class_names,
            metadata={
                "binary_class": balance.binary_class,
                "store": str(Path(store_path).resolve()),
                "member_val_dice": [m.val_dice for m in members],
            },
        )
        info = log_bundle_model(
            bundle,
            in_channels=unet.in_channels,
            out_channels=balance.out_channels,
            registered_name=registered_name,
        )
        mlflow.log_metric("model_val_dice", float(np.mean([m.val_dice for m in members])))
    if registered_name:
        return f"models:/{registered_name}/{info.registered_model_version}"
    return info.model_uri


def open_training_run(
    balance: Balance,
    *,
    store_path: str,
    workdir: Path,
    experiment: str,
    run_name: str,
    resume: bool,
    params: dict[str, Any],
    flow_run_id: str | None,
) -> tuple[str, Path]:
    """Start (or, with `resume`, reopen) the MLflow run; returns (run id, checkpoint folder).

    A new run with the name of an old one starts from scratch: the old checkpoints are removed
    (its MLflow record stays).
    """
    configure_tracking(workdir, experiment)
    folder = workdir / "training" / run_name
    marker = folder / "mlflow_run_id"
    if resume and marker.exists():
        return marker.read_text().strip(), folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    store = open_dataset(store_path)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(flat_params(params))
        mlflow.set_tags(
            {
                "segflow.store": str(Path(store_path).resolve()),
                "segflow.dataset_sha256": dataset_fingerprint(store),
                "segflow.train_samples": len(balance.train_ids),
                "prefect.flow_run_id": flow_run_id or "",
            }
        )
        log_class_distribution(
            "class_fraction.uniform", balance.fractions_before, balance.class_names
        )
        log_class_distribution(
            "class_fraction.balanced", balance.fractions_after, balance.class_names
        )
    marker.write_text(run.info.run_id)
    return run.info.run_id, folder


# Prefect tasks: thin wrappers that add logging.


@task(name="balance-classes", cache_policy=NO_CACHE)
def balance_classes(store: str, **options: Any) -> Balance:
    """Build and store the sampling plan (see :func:`prepare_balance`)."""
    result = prepare_balance(store, **options)
    get_run_logger().info(
        "class fractions: uniform patches %s, balanced patches %s",
        [round(f, 4) for f in result.fractions_before],
        [round(f, 4) for f in result.fractions_after],
    )
    return result


@task(name="train-model", cache_policy=NO_CACHE, task_run_name="train-member-{member}")
def train_model(balance: Balance, *, member: int, **options: Any) -> MemberResult:
    """Train one model (see :func:`train_member`)."""
    result = train_member(balance, member=member, **options)
    get_run_logger().info(
        "member %d: best val Dice %.4f at epoch %d (%d epochs, stopped by %s); kept the %s "
        "weights (val Dice %.4f)",
        member,
        result.best_dice,
        result.best_epoch + 1,
        result.epochs_done,
        result.stopped,
        result.kept,
        result.val_dice,
    )
    return result


@task(name="register-model", cache_policy=NO_CACHE)
def register(balance: Balance, members: list[MemberResult], **options: Any) -> str:
    """Log and register the model (see :func:`register_model`)."""
    uri = register_model(balance, members, **options)
    get_run_logger().info("model: %s", uri)
    return uri


@task(name="open-training-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_run(balance: Balance, **options: Any) -> tuple[str, Path]:
    """Start or reopen the MLflow run (see :func:`open_training_run`)."""
    run_id, folder = open_training_run(balance, **options)
    get_run_logger().info("MLflow run %s, checkpoints in %s", run_id, folder)
    return run_id, folder
