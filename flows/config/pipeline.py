"""Settings of the ``segflow-pipeline`` flow: each stage's settings minus the paths it fills in."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, create_model, model_validator
from pydantic.fields import FieldInfo

from segflow.flows.config.base import Frozen, StorageOptions, storage_options_field
from segflow.flows.config.evaluate import EvaluateConfig
from segflow.flows.config.infer import InferConfig
from segflow.flows.config.ingest import IngestConfig
from segflow.flows.config.train import TrainConfig


def _stage(model: type[Frozen], paths: tuple[str, ...], **defaults: Any) -> type[Frozen]:
    """`model`'s settings without the fields the pipeline fills in (`paths`), optionally with
    other `defaults`. Cross-field checks run when the pipeline builds the stage's config."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in paths:
            continue
        if name in defaults:
            info = FieldInfo.merge_field_infos(info, default=defaults[name])
        fields[name] = (info.annotation, info)
    return create_model(
        f"{model.__name__.removesuffix('Config')}Stage",
        __base__=Frozen,
        __doc__=f"{model.__doc__} Paths are set by the pipeline.",
        **fields,
    )


# Set by the pipeline for every stage: the stores, the work dir, the storage options.
_SHARED = ("storage_options",)
IngestStage = _stage(IngestConfig, ("source", "store", *_SHARED))
TrainStage = _stage(TrainConfig, ("store", "workdir", "resume", *_SHARED))
InferStage = _stage(InferConfig, ("input", "output", "model", "workdir", *_SHARED), split="test")
EvaluateStage = _stage(EvaluateConfig, ("predictions", "store", "workdir", "experiment", *_SHARED))


class PipelineConfig(Frozen):
    """Settings of the `segflow-pipeline` flow: ingest -> train -> infer -> evaluate.

    Everything lands in `workdir`: ``dataset.zarr``, the MLflow database and checkpoints,
    ``predictions/<model>-<version>-<run>.zarr`` and ``pipeline.json`` (what ran, for
    skipping it next time).
    """

    source: str = Field(
        ...,
        description="Folder holding the image and mask sub-folders, or train/, val/ and test/ "
        "folders that each hold them (a sample's folder gives its split).",
    )
    workdir: str = Field(..., description="Where the runs, checkpoints and records go.")
    stores: str | None = Field(
        None,
        description="Folder or URL (s3://bucket/prefix) for the dataset and prediction stores; "
        "default: the work dir.",
    )
    storage_options: StorageOptions = storage_options_field()
    ingest: IngestStage = Field(default_factory=IngestStage, description="Ingest settings.")
    train: TrainStage = Field(default_factory=TrainStage, description="Training settings.")
    infer: InferStage = Field(default_factory=InferStage, description="Inference settings.")
    evaluate: EvaluateStage = Field(
        default_factory=EvaluateStage, description="Evaluation settings."
    )

    @property
    def store(self) -> str:
        """The dataset store the ingest stage writes: ``STORES/dataset.zarr``."""
        from segflow.tasks.storage.urls import join  # zarr and fsspec: not for `--help`

        return join(self.stores or self.workdir, "dataset.zarr")

    def ingest_config(self) -> IngestConfig:
        """The ingest stage's config: `source` into :attr:`store`."""
        return IngestConfig(
            source=self.source,
            store=self.store,
            storage_options=self.storage_options,
            **self.ingest.model_dump(),
        )

    def train_config(self, *, resume: bool = False) -> TrainConfig:
        """The training stage's config on :attr:`store`; `resume` continues an interrupted run."""
        return TrainConfig(
            store=self.store,
            workdir=self.workdir,
            resume=resume,
            storage_options=self.storage_options,
            **self.train.model_dump(exclude_unset=True),  # unset: the budget plan may fill it
        )

    def infer_config(self, model: str, run_id: str) -> InferConfig:
        """Predictions of each model go to their own store (a store holds one model's),
        named by the model and its training run (version numbers restart with a new
        tracking database)."""
        name = model.removeprefix("models:/").removeprefix("runs:/").replace("/", "-")
        from segflow.tasks.storage.urls import join

        output = join(self.stores or self.workdir, "predictions", f"{name}-{run_id[:8]}.zarr")
        return InferConfig(
            input=self.store,
            output=output,
            model=model,
            workdir=self.workdir,
            storage_options=self.storage_options,
            **self.infer.model_dump(),
        )

    def evaluate_config(self, predictions: str) -> EvaluateConfig:
        """The evaluation stage's config: `predictions` against :attr:`store`, logged to the
        training stage's experiment."""
        return EvaluateConfig(
            predictions=predictions,
            store=self.store,
            workdir=self.workdir,
            experiment=self.train.experiment,
            storage_options=self.storage_options,
            **self.evaluate.model_dump(),
        )

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        # Build every stage's config now, so a bad combination fails before any work.
        self.ingest_config()
        self.train_config()
        self.evaluate_config(self.infer_config("models:/check/1", "0" * 32).output)
        return self


def load_pipeline_config(
    source: str, workdir: str, file: str | Path | None = None, overrides: Sequence[str] = ()
) -> PipelineConfig:
    """Build the config from an optional YAML or TOML `file` and ``section.field=value``
    `overrides` (values parsed as YAML: ``4``, ``true``, ``null``, ``[a, b]``).

    Raises
    ------
    ValueError
        An unreadable file or a malformed override; pydantic's ValidationError for bad values.
    """
    data: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        text = path.read_text()
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise ValueError(
                f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted:
            raise ValueError(f"override {item!r}: expected section.field=value")
        *sections, field = dotted.split(".")
        target = data
        for section in sections:
            target = target.setdefault(section, {})
        target[field] = yaml.safe_load(value)
    return PipelineConfig.model_validate(data | {"source": source, "workdir": workdir})
