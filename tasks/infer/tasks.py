"""Prefect tasks of the inference stage: each wraps the plain function of its name and adds
retries or logging."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from segflow.tasks.infer import blocks, output
from segflow.tasks.infer import sources as inputs
from segflow.tasks.infer.blocks import BlockSettings
from segflow.tasks.infer.sources import Source
from segflow.tasks.storage.image_io import SizeLimits


@task(name="find-inputs", cache_policy=NO_CACHE)
def find_sources(
    spec: str, *, split: str | None, limits: SizeLimits
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Find the images to predict; log the rejected ones."""
    found, rejected = inputs.find_sources(spec, split=split, limits=limits)
    logger = get_run_logger()
    logger.info("%d images to predict, %d rejected", len(found), len(rejected))
    for path, reason in rejected:
        logger.warning("rejected %s: %s", path, reason)
    return found, rejected


@task(name="prepare-predictions", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def prepare_predictions(
    sources: list[Source], out: str, *, model_uri: str, settings: dict[str, Any]
) -> tuple[str, list[str]]:
    """Create the prediction store; retried, as it fetches the model and writes storage."""
    return output.prepare_predictions(sources, out, model_uri=model_uri, settings=settings)


@task(name="predict-blocks", cache_policy=NO_CACHE)
def predict_blocks(
    sources: list[Source],
    out: str,
    settings: BlockSettings,
    *,
    workers: int,
    dask_address: str | None,
) -> tuple[int, int, dict[str, str]]:
    """Fan the blocks out to Dask; log progress and each failed image, and show the share of
    blocks done in a progress artifact (updated every 5 %, as each update is an API call)."""
    logger = get_run_logger()
    artifact = create_progress_artifact(0.0, key="infer-blocks", description=f"Blocks of {out}")
    shown: list[float] = []

    def advance(done: int, total: int) -> None:
        shown.append(100 * done / total)
        update_progress_artifact(artifact, shown[-1])

    result = blocks.predict_blocks(
        sources,
        out,
        settings,
        workers=workers,
        dask_address=dask_address,
        log=logger.info,
        progress=advance,
    )
    if not shown:  # every block was already done: predict_blocks reported nothing
        update_progress_artifact(artifact, 100.0)
    for name, reason in result[2].items():
        logger.error("image %s failed: %s", name, reason)
    return result


@task(name="build-pyramids", cache_policy=NO_CACHE)
def build_pyramids(out: str, names: list[str], *, block: int) -> dict[str, int]:
    """Write each image's pyramid levels; log the level blocks written."""
    written = output.build_pyramids(out, names, block=block)
    get_run_logger().info("pyramids: %d level blocks written", sum(written.values()))
    return written


@task(name="label-instances", cache_policy=NO_CACHE)
def label_instances(out: str, names: list[str], *, min_size: int, block: int) -> dict[str, int]:
    """Label each image's connected components; log the object counts."""
    counts = output.label_instances(out, names, min_size=min_size, block=block)
    logger = get_run_logger()
    for name, count in counts.items():
        logger.info("%s: %d objects of at least %d pixels", name, count, min_size)
    return counts
