"""The table of segflow's deployments, shared by ``segflow serve`` and ``prefect.yaml``.

Adding a deployment is adding one :class:`DeploymentSpec` to :data:`SPECS`. Example parameters
are built from a data root laid out as::

    DATA/raw/{images,masks}   labelled pairs to ingest
    DATA/dataset.zarr         the dataset store
    DATA/work                 checkpoints and the default MLflow database
    DATA/incoming             images the nightly inference predicts
    DATA/predictions.zarr     the prediction store
    DATA/test-predictions.zarr  predictions of the test split, to evaluate
    DATA/pipeline             the work directory of the scheduled pipeline

This module imports no Prefect, so it can be read before Prefect's settings are chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from segflow.flows.config import (
    EvaluateConfig,
    InferConfig,
    IngestConfig,
    PipelineConfig,
    TrainConfig,
)


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: which flow, under what name, with which example config and schedule."""

    entrypoint: str
    """``path/to/file.py:function``, relative to the repository root."""
    flow_name: str
    name: str
    description: str
    tags: tuple[str, ...]
    cron: str | None
    """Example schedule (UTC); created inactive unless schedules are switched on."""
    example: Callable[[Path], BaseModel]
    """The flow's config for a data root."""

    @property
    def full_name(self) -> str:
        """``flow-name/deployment-name``, as ``prefect deployment run`` wants it."""
        return f"{self.flow_name}/{self.name}"

    def load_flow(self) -> Any:
        """Import the entrypoint's module and return the flow object."""
        path, function = self.entrypoint.split(":")
        module = importlib.import_module("segflow." + path.removesuffix(".py").replace("/", "."))
        return getattr(module, function)

    def parameters(self, data_root: Path) -> dict[str, Any]:
        """The deployment's default parameters: the example config, non-default fields only."""
        config = self.example(data_root)
        return {"config": config.model_dump(mode="json", exclude_defaults=True)}


SPECS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        entrypoint="flows/ingest.py:ingest_dataset",
        flow_name="ingest-dataset",
        name="bulk-ingest",
        description="Ingest the labelled image/mask pairs under DATA/raw into DATA/dataset.zarr; "
        "re-runs add only new or changed pairs.",
        tags=("segflow", "ingest"),
        cron="0 1 * * *",
        example=lambda root: IngestConfig(
            source=str(root / "raw"), store=str(root / "dataset.zarr")
        ),
    ),
    DeploymentSpec(
        entrypoint="flows/train.py:train_unet",
        flow_name="train-unet",
        name="weekly-retrain",
        description="Retrain the U-Net on DATA/dataset.zarr and register it as "
        "segflow-unet@newest (at most two hours).",
        tags=("segflow", "train"),
        cron="0 3 * * 0",
        example=lambda root: TrainConfig(
            store=str(root / "dataset.zarr"), workdir=str(root / "work"), max_minutes=120
        ),
    ),
    DeploymentSpec(
        entrypoint="flows/infer.py:infer_images",
        flow_name="infer-images",
        name="nightly-folder",
        description="Predict the images in DATA/incoming with segflow-unet@newest into "
        "DATA/predictions.zarr; images already predicted are skipped.",
        tags=("segflow", "infer"),
        cron="0 2 * * *",
        example=lambda root: InferConfig(
            input=str(root / "incoming"),
            output=str(root / "predictions.zarr"),
            workdir=str(root / "work"),
        ),
    ),
    DeploymentSpec(
        entrypoint="flows/evaluate.py:evaluate_predictions",
        flow_name="evaluate-predictions",
        name="test-split",
        description="Score DATA/test-predictions.zarr against the test masks of "
        "DATA/dataset.zarr, log to MLflow and promote the model to 'champion' if it is better.",
        tags=("segflow", "evaluate"),
        cron=None,
        example=lambda root: EvaluateConfig(
            predictions=str(root / "test-predictions.zarr"),
            store=str(root / "dataset.zarr"),
            workdir=str(root / "work"),
            promote=True,
        ),
    ),
    DeploymentSpec(
        entrypoint="flows/pipeline.py:run_pipeline",
        flow_name="segflow-pipeline",
        name="weekly-retrain-evaluate",
        description="Ingest DATA/raw, retrain (at most two hours), predict and evaluate the "
        "test split in DATA/pipeline, promoting a better model to 'champion'; stages whose "
        "inputs did not change are skipped.",
        tags=("segflow", "pipeline"),
        cron="0 4 * * 6",
        example=lambda root: PipelineConfig(
            source=str(root / "raw"),
            workdir=str(root / "pipeline"),
            train={"max_minutes": 120},
            evaluate={"promote": True},
        ),
    ),
)


def select(only: Sequence[str] | None = None) -> list[DeploymentSpec]:
    """The specs named in `only` (``flow/deployment`` or a flow name); all when None.

    Raises
    ------
    ValueError
        A name matches no deployment.
    """
    if only is None:
        return list(SPECS)
    known = {s.full_name for s in SPECS} | {s.flow_name for s in SPECS}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"unknown deployments {unknown}; choose from {sorted(known)}")
    return [s for s in SPECS if s.full_name in only or s.flow_name in only]
