"""The training run in MLflow and the trained model's registration."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from segflow.models.unet import UNetConfig
from segflow.tasks.storage.bundle import save_bundle
from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from segflow.tasks.tracking.model import log_bundle_model
from segflow.tasks.tracking.runs import configure_tracking, flat_params, log_class_distribution
from segflow.tasks.train.loop import load_checkpoint
from segflow.tasks.train.member import MemberResult
from segflow.tasks.train.sampling import (
    Balance,
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
