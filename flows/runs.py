"""How the flows' runs look in the Prefect UI: names and tags from the inputs.

A flow's ``flow_run_name`` is a :func:`named_by` callable, which also sets the tags. The labels
are pure functions of a flow's config, so they are tested without Prefect.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import PurePosixPath
from typing import NamedTuple, TypeVar

from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from pydantic import BaseModel

from segflow.flows.config import (
    EvaluateConfig,
    InferConfig,
    IngestConfig,
    PipelineConfig,
    TrainConfig,
)

Config = TypeVar("Config", bound=BaseModel)


class Labels(NamedTuple):
    """A flow run's name and tags."""

    name: str
    tags: list[str]


def _name(location: str) -> str:
    """The last part of a path or URL (`s3://b/raw/` -> `raw`)."""
    return PurePosixPath(location.rstrip("/")).name or location


def _stem(location: str) -> str:
    """The last part without its extension (`work/dataset.zarr` -> `dataset`)."""
    return PurePosixPath(_name(location)).stem or _name(location)


def ingest_labels(config: IngestConfig) -> Labels:
    """``ingest-<source>-<date>``; tags the stage, the source and the store."""
    source = _name(config.source)
    tags = ["ingest", f"source:{source}", f"store:{_stem(config.store)}"]
    return Labels(f"ingest-{source}-{date.today():%Y-%m-%d}", tags)


def train_labels(config: TrainConfig) -> Labels:
    """``train-<store>-<run name>``; tags the stage, the store and the registered model."""
    store = _stem(config.store)
    tags = ["train", f"store:{store}"]
    if config.registered_model:
        tags.append(f"model:{config.registered_model}")
    return Labels(f"train-{store}-{config.run_name}", tags)


def infer_labels(config: InferConfig) -> Labels:
    """``infer-<input>``; tags the stage, the input, the output and the model."""
    source = _stem(config.input)
    tags = ["infer", f"input:{source}", f"output:{_stem(config.output)}", f"model:{config.model}"]
    return Labels(f"infer-{source}", tags)


def evaluate_labels(config: EvaluateConfig) -> Labels:
    """``evaluate-<predictions>``; tags the stage, the predictions and the store."""
    predictions = _stem(config.predictions)
    tags = ["evaluate", f"predictions:{predictions}", f"store:{_stem(config.store)}"]
    return Labels(f"evaluate-{predictions}", tags)


def pipeline_labels(config: PipelineConfig) -> Labels:
    """``pipeline-<workdir>``; tags the stage, the source and the work directory."""
    workdir = _name(config.workdir)
    tags = ["pipeline", f"source:{_name(config.source)}", f"workdir:{workdir}"]
    return Labels(f"pipeline-{workdir}", tags)


def _current_config(config_type: type[Config]) -> Config:
    """The running flow's ``config`` parameter (a dict when it came from a deployment)."""
    config = flow_run.parameters["config"]
    return config if isinstance(config, config_type) else config_type.model_validate(config)


def named_by(labels: Callable[[Config], Labels], config_type: type[Config]) -> Callable[[], str]:
    """A ``flow_run_name`` callable: it tags the running flow run with `labels`' tags and
    returns its name. Prefect calls it once, as the run starts; ``@flow`` takes no tags, and
    tags from a deployment or a ``prefect.tags`` context are kept."""

    def name() -> str:
        run = labels(_current_config(config_type))
        tags = list(dict.fromkeys([*flow_run.tags, "segflow", *run.tags]))
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.get_id(), tags=tags)
        return run.name

    return name
