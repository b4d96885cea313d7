"""Settings of the ``evaluate-predictions`` flow."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from segflow.flows.config.base import Frozen, StorageOptions, storage_options_field


class EvaluateConfig(Frozen):
    """Settings of the `evaluate-predictions` flow."""

    predictions: str = Field(..., description="Prediction store written by `segflow infer`.")
    store: str = Field(..., description="Dataset store holding the true masks.")
    split: Literal["train", "val", "test"] | None = Field(
        "test", description="Evaluate the samples of this split (None: all samples)."
    )
    workdir: str = Field("work", description="Holds the default MLflow database.")
    experiment: str = Field(
        "segflow", description="MLflow experiment, when the model has no training run."
    )
    promote: bool = Field(
        False, description="Move the champion alias here if the test Dice beats its holder."
    )
    champion_alias: str = Field(
        "champion", pattern=r"^[A-Za-z0-9_-]+$", description="Alias promotion moves."
    )
    overlays: int = Field(2, ge=0, le=16, description="Best and worst images logged as overlays.")
    workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Dask workers (default: in-process up to 2^28 pixels, else one per core).",
    )
    dask_address: str | None = Field(None, description="Use this Dask scheduler instead.")
    storage_options: StorageOptions = storage_options_field()
