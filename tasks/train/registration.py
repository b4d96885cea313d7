"""The trained model's registration: one bundle of the members' weights, logged to MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from segflow.models.unet import UNetConfig
from segflow.tasks.storage.bundle import save_bundle
from segflow.tasks.tracking.training import log_trained_model
from segflow.tasks.train.checkpoints import load_checkpoint
from segflow.tasks.train.ensemble import MemberResult
from segflow.tasks.train.sampling import Balance
from segflow.tasks.train.training_run import TrainingRun


def register_model(
    balance: Balance,
    members: list[MemberResult],
    run: TrainingRun,
    unet: UNetConfig,
    registered_name: str | None,
) -> str:
    """Bundle the members' kept weights, log the bundle to `run` and register it under
    `registered_name` (None: log only); returns the model URI."""
    states = [load_checkpoint(Path(m.checkpoint))["model"] for m in members]
    val_dice = [m.val_dice for m in members]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = save_bundle(
            Path(tmp) / "bundle",
            config=unet,
            state_dicts=states,
            mean=balance.normalization.mean,
            std=balance.normalization.std,
            class_names=balance.class_names,
            metadata={
                "binary_class": balance.binary_class,
                "store": str(Path(balance.store).resolve()),
                "member_val_dice": val_dice,
            },
        )
        return log_trained_model(
            run.run_id,
            bundle,
            in_channels=unet.in_channels,
            out_channels=balance.out_channels,
            registered_name=registered_name,
            val_dice=float(np.mean(val_dice)),
        )
