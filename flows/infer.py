"""The ``infer-images`` flow: Dask-parallel tiled inference into an OME-Zarr prediction store."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from segflow.flows.config import InferConfig
from segflow.tasks.infer.block import InferSettings, default_batch
from segflow.tasks.infer.predict import default_infer_workers
from segflow.tasks.infer.tasks import find_inputs, label_instances, predict_blocks, prepare_output
from segflow.tasks.tracking.runs import configure_tracking


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


@flow(name="infer-images", validate_parameters=True)
def infer_images(config: InferConfig) -> InferSummary:
    """Predict every input image block by block on a Dask cluster.

    Re-running on the same output resumes: blocks already written are skipped.
    """
    if config.model.startswith(("models:/", "runs:/")):
        configure_tracking(Path(config.workdir), "segflow")
    sources, rejected = find_inputs(config.input, config.split)
    workers = config.workers or default_infer_workers(config.device)
    bundle, _ = prepare_output(
        sources, config.output, model_uri=config.model, settings=config.model_dump()
    )
    settings = InferSettings(
        bundle=bundle,
        tile=config.tile,
        blend=config.blend,
        margin=config.margin,
        overlap=config.overlap,
        batch=config.batch or default_batch(config.device),
        tta=config.tta,
        threshold=config.threshold,
        precision=config.precision,
        device=config.device,
        probability_dtype=config.probability_dtype,
        block=config.block,
        torch_threads=config.torch_threads or max(1, (os.cpu_count() or 1) // workers),
    )
    predicted, skipped, failed = predict_blocks(
        sources,
        config.output,
        settings,
        workers=workers,
        dask_address=config.dask_address,
    )
    if config.instances:
        done = [s.name for s in sources if s.name not in failed]
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
        f"predicted, {skipped} already done, {len(failed)} failed, {len(rejected)} unreadable; "
        f"model `{config.model}`.",
        key="infer-summary",
    )
    return summary
