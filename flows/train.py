"""The ``train-unet`` flow: balance classes, train the U-Net (or an ensemble), register it."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from segflow.flows.config import TrainConfig
from segflow.tasks.train.tasks import (
    balance_classes,
    open_training_run,
    register_model,
    train_model,
)


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
    balance = balance_classes(config.store, config.sampling())
    run = open_training_run(balance, config.training_run(), flow_run.get_id())
    settings = config.members(config.unet(balance.in_channels, balance.out_channels))
    members = [train_model(balance, k, run, settings) for k in range(config.ensemble)]
    model_uri = register_model(balance, members, run, settings.unet, config.registered_model)
    summary = TrainSummary(
        run_id=run.run_id,
        model_uri=model_uri,
        val_dice=sum(m.val_dice for m in members) / len(members),
        members=[m.__dict__ for m in members],
        class_fractions_uniform=balance.fractions_before,
        class_fractions_balanced=balance.fractions_after,
    )
    create_markdown_artifact(
        f"# Trained `{model_uri}`\n\nMLflow run `{run.run_id}`; val Dice {summary.val_dice:.4f} "
        f"over {len(members)} member(s).",
        key="train-summary",
    )
    return summary
