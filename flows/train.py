"""The ``train-unet`` flow: balance classes, train the U-Net (or an ensemble), register it."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from segflow.flows.config import TrainConfig
from segflow.models.unet import UNetConfig
from segflow.tasks.train.tasks import balance_classes, register, start_run, train_model


class TrainSummary(BaseModel):
    """What a training run produced."""

    run_id: str
    model_uri: str
    val_dice: float
    members: list[dict]
    class_fractions_uniform: list[float]
    class_fractions_balanced: list[float]


@flow(name="train-unet", validate_parameters=True)
def train_unet(config: TrainConfig) -> TrainSummary:
    """Train a U-Net on ``config.store`` and register it in MLflow.

    Steps: the balance step (sampling plan, stored with the dataset) -> one training task per
    ensemble member (checkpoints every epoch; ``resume`` continues them) -> model registration.
    """
    balance = balance_classes(
        config.store,
        patch_size=config.patch_size,
        fg_oversample=config.fg_oversample,
        balance=config.balance,
        class_weights=config.class_weights,
        weight_cap=config.weight_cap,
        target_class=config.target_class,
        seed=config.seed,
    )
    unet = UNetConfig(
        in_channels=balance.in_channels,
        num_classes=balance.out_channels,
        depth=config.depth,
        base_channels=config.base_channels,
        batch_norm=config.batch_norm,
    )
    run_id, folder = start_run(
        balance,
        store_path=config.store,
        workdir=Path(config.workdir),
        experiment=config.experiment,
        run_name=config.run_name,
        resume=config.resume,
        params=config.model_dump(),
        flow_run_id=flow_run.get_id(),
    )
    members = [
        train_model(
            balance,
            member=k,
            store_path=config.store,
            folder=folder,
            parent_run_id=run_id,
            members=config.ensemble,
            folds=config.ensemble_mode == "folds",
            unet=unet,
            loss=config.loss,
            epochs=config.epochs,
            patches_per_epoch=config.patches_per_epoch,
            batch_size=config.batch_size,
            lr=config.lr,
            weight_decay=config.weight_decay,
            elastic=config.elastic,
            device=config.device,
            precision=config.precision,
            channels_last=config.channels_last,
            num_workers=config.num_workers,
            val_max_tiles=config.val_max_tiles,
            patience=config.patience,
            weights=config.weights,
            max_seconds=None if config.max_minutes is None else config.max_minutes * 60,
            resume=config.resume,
            seed=config.seed,
            config={**config.model_dump(), "unet": unet.to_dict()},
        )
        for k in range(config.ensemble)
    ]
    model_uri = register(
        balance,
        members,
        unet=unet,
        parent_run_id=run_id,
        registered_name=config.registered_model,
        store_path=config.store,
    )
    summary = TrainSummary(
        run_id=run_id,
        model_uri=model_uri,
        val_dice=sum(m.val_dice for m in members) / len(members),
        members=[m.__dict__ for m in members],
        class_fractions_uniform=balance.fractions_before,
        class_fractions_balanced=balance.fractions_after,
    )
    create_markdown_artifact(
        f"# Trained `{model_uri}`\n\nMLflow run `{run_id}`; val Dice {summary.val_dice:.4f} "
        f"over {len(members)} member(s).",
        key="train-summary",
    )
    return summary
