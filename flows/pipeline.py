"""The ``segflow-pipeline`` flow: ingest -> train -> infer -> evaluate as subflows.

Re-running it on the same work directory skips every stage whose inputs did not change
(:mod:`segflow.tasks.pipeline.ledger`); an interrupted stage runs again and resumes by its own
means.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from segflow.flows.config import InferConfig, IngestConfig, PipelineConfig
from segflow.flows.evaluate import evaluate_predictions
from segflow.flows.infer import infer_images
from segflow.flows.ingest import ingest_dataset
from segflow.flows.runs import named_by, pipeline_labels
from segflow.flows.summaries import pipeline_markdown
from segflow.flows.train import train_unet
from segflow.tasks.pipeline.ledger import Ledger, source_fingerprint, stage_key
from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from segflow.tasks.storage.urls import exists, read_bytes, use_options
from segflow.tasks.tracking.registry import resolve_model
from segflow.tasks.tracking.runs import configure_tracking


class StageReport(BaseModel):
    """One stage of a pipeline run."""

    status: str  # "ran" or "skipped" (inputs unchanged since the recorded run)
    seconds: float
    result: dict[str, Any]


class PipelineSummary(BaseModel):
    """What a pipeline run did and where its products are."""

    workdir: str
    store: str
    model_uri: str
    predictions: str
    stages: dict[str, StageReport]


def ingest_key(ingest: IngestConfig) -> str:
    """The ingest stage's key: its settings, the source's files and the split file's bytes
    (which may live outside the source)."""
    split = read_bytes(ingest.split_file) if ingest.split_file else b""
    source = source_fingerprint(ingest.source)
    return stage_key(ingest.model_dump(), source, hashlib.sha256(split).hexdigest())


def _stage(
    ledger: Ledger,
    name: str,
    key: str,
    run: Callable[[bool], BaseModel],
    outputs_exist: Callable[[Mapping[str, Any]], bool] = lambda _: True,
) -> StageReport:
    """Run a stage unless the ledger holds a finished run with the same key (and its outputs
    still exist). `run(resume)` gets whether an earlier run with this key was interrupted."""
    logger = get_run_logger()
    recorded = ledger.done(name, key)
    if recorded is not None and outputs_exist(recorded):
        logger.info("%s: inputs unchanged since the recorded run, skipped", name)
        return StageReport(status="skipped", seconds=0.0, result=recorded)
    resume = ledger.interrupted(name, key)
    ledger.start(name, key)
    start = time.perf_counter()
    result = run(resume).model_dump(mode="json")
    seconds = time.perf_counter() - start
    ledger.finish(name, key, result)
    logger.info("%s: done in %.1f s", name, seconds)
    return StageReport(status="ran", seconds=seconds, result=result)


@flow(
    name="segflow-pipeline",
    validate_parameters=True,
    flow_run_name=named_by(pipeline_labels, PipelineConfig),
)
def run_pipeline(config: PipelineConfig) -> PipelineSummary:
    """Ingest ``config.source``, train a U-Net, predict and evaluate, all in ``config.workdir``.

    Each stage is the stage's own flow, run as a subflow with the stage's config.
    """
    use_options(config.storage_options)
    ledger = Ledger(config.workdir)
    stages: dict[str, StageReport] = {}

    ingest = config.ingest_config()
    key = ingest_key(ingest)
    stages["ingest"] = _stage(
        ledger,
        "ingest",
        key,
        lambda _: ingest_dataset(ingest),
        lambda _: exists(config.store, "zarr.json"),
    )

    data = dataset_fingerprint(open_dataset(config.store))
    key = stage_key(config.train_config().model_dump(), data)
    tracking_uri = configure_tracking(Path(config.workdir), config.train.experiment)
    stages["train"] = _stage(
        ledger,
        "train",
        key,
        lambda resume: train_unet(config.train_config(resume=resume)),
        lambda recorded: _registered(recorded["model_uri"]),
    )
    model_uri = stages["train"].result["model_uri"]

    infer = config.infer_config(model_uri, stages["train"].result["run_id"])
    key = stage_key(infer.model_dump(), data)
    stages["infer"] = _stage(
        ledger,
        "infer",
        key,
        lambda _: _infer_every_image(infer),
        lambda _: exists(infer.output, "zarr.json"),
    )

    evaluate = config.evaluate_config(infer.output)
    key = stage_key(evaluate.model_dump(), key)
    stages["evaluate"] = _stage(ledger, "evaluate", key, lambda _: evaluate_predictions(evaluate))
    summary = PipelineSummary(
        workdir=config.workdir,
        store=config.store,
        model_uri=model_uri,
        predictions=infer.output,
        stages=stages,
    )
    create_markdown_artifact(pipeline_markdown(summary, tracking_uri), key="pipeline-summary")
    return summary


def _infer_every_image(config: InferConfig) -> BaseModel:
    """Run the inference flow; a failed or missing image fails the stage, so it is not recorded
    as done and the next pipeline run predicts again.

    Raises
    ------
    RuntimeError
        An image failed, or the input held no image.
    """
    summary = infer_images(config)
    if summary.failed or summary.images == 0:
        raise RuntimeError(f"inference failed for {summary.failed or 'every image'}")
    return summary


def _registered(model_uri: str) -> bool:
    """Whether the tracking store still knows the model (e.g. its database was not removed)."""
    try:
        resolve_model(model_uri)
    except MlflowException:
        return False
    return True
