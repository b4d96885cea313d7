"""The ``infer-images`` flow: Dask-parallel tiled inference into an OME-Zarr prediction store."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from segflow.flows.config import InferConfig
from segflow.flows.runs import infer_labels, named_by
from segflow.flows.summaries import mlflow_link
from segflow.tasks.infer.tasks import (
    build_pyramids,
    find_sources,
    label_instances,
    predict_blocks,
    prepare_predictions,
)
from segflow.tasks.runtime.locks import hold
from segflow.tasks.storage.paths import read_index
from segflow.tasks.storage.urls import is_remote, local_path, use_options
from segflow.tasks.tracking.runs import configure_tracking, tracking_uri


class InferSummary(BaseModel):
    """What an inference run did."""

    output: str
    model: str
    images: int
    blocks_predicted: int
    blocks_already_done: int
    failed: dict[str, str]
    rejected: list[tuple[str, str]]
    objects: dict[str, int]


def writer_lock(config: InferConfig) -> AbstractContextManager[Path]:
    """The writer lock of the prediction store, held for the whole flow.

    The CLI takes it first (it is re-entrant), so a second writer fails at once, before
    Prefect starts.
    """
    return hold(config.output if is_remote(config.output) else local_path(config.output))


@flow(
    name="infer-images",
    validate_parameters=True,
    flow_run_name=named_by(infer_labels, InferConfig),
)
def infer_images(config: InferConfig) -> InferSummary:
    """Predict every input image block by block on a Dask cluster.

    Re-running on the same output resumes: blocks already written are skipped. The output's
    writer lock is held throughout: a second writer fails at once (``LockHeld``).
    """
    use_options(config.storage_options)
    with writer_lock(config):
        return _infer(config)


def _infer(config: InferConfig) -> InferSummary:
    if config.model.startswith(("models:/", "runs:/")):
        configure_tracking(Path(config.workdir), "segflow")
    sources, rejected = find_sources(config.input, split=config.split, limits=config.size_limits())
    parallelism = config.parallelism()
    bundle, _ = prepare_predictions(
        sources, config.output, model_uri=config.model, settings=config.model_dump()
    )
    predicted, skipped, failed = predict_blocks(
        sources,
        config.output,
        config.block_settings(bundle, parallelism),
        workers=parallelism.workers,
        dask_address=config.dask_address,
    )
    done = [s.name for s in sources if s.name not in failed]
    build_pyramids(config.output, done, block=config.block)
    if config.instances:
        objects = label_instances(
            config.output, done, min_size=config.min_object_size, block=config.block
        )
    else:
        objects = {}
    summary = InferSummary(
        output=config.output,
        model=config.model,
        images=len(sources),
        blocks_predicted=predicted,
        blocks_already_done=skipped,
        failed=failed,
        rejected=rejected,
        objects=objects,
    )
    create_markdown_artifact(
        f"# Predictions in `{config.output}`\n\n{len(sources)} images, {predicted} blocks "
        f"predicted, {skipped} already done, {len(failed)} failed, {len(rejected)} rejected; "
        f"model `{config.model}`{_trained_in(config.output)}.",
        key="infer-summary",
    )
    return summary


def _trained_in(output: str) -> str:
    """``, trained in <link to its MLflow run>`` for a model from MLflow, else nothing."""
    run_id = read_index(output)["model"].get("run_id")
    return f", trained in {mlflow_link(tracking_uri(), run_id)}" if run_id else ""
