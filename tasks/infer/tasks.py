"""Prefect tasks of the inference stage: thin wrappers that add logging."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from segflow.tasks.infer.block import InferSettings
from segflow.tasks.infer.predict import prepare_predictions, run_blocks
from segflow.tasks.infer.sources import Source, find_sources
from segflow.tasks.storage.predictions import (
    write_instances,
)


@task(name="find-inputs", cache_policy=NO_CACHE)
def find_inputs(spec: str, split: str | None) -> tuple[list[Source], list[tuple[str, str]]]:
    """Find the images to predict (see :func:`segflow.tasks.infer.sources.find_sources`)."""
    sources, rejected = find_sources(spec, split=split)
    logger = get_run_logger()
    logger.info("%d images to predict, %d unreadable", len(sources), len(rejected))
    for path, reason in rejected:
        logger.warning("rejected %s: %s", path, reason)
    return sources, rejected


@task(name="prepare-predictions", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def prepare_output(sources: list[Source], out: str, **options: Any) -> tuple[str, list[str]]:
    """Create the prediction store (see :func:`prepare_predictions`)."""
    return prepare_predictions(sources, out, **options)


@task(name="predict-blocks", cache_policy=NO_CACHE)
def predict_blocks(
    sources: list[Source], out: str, settings: InferSettings, **options: Any
) -> tuple[int, int, dict[str, str]]:
    """Fan the blocks out to Dask (see :func:`run_blocks`)."""
    logger = get_run_logger()
    result = run_blocks(sources, out, settings, log=logger.info, **options)
    for name, reason in result[2].items():
        logger.error("image %s failed: %s", name, reason)
    return result


@task(name="label-instances", cache_policy=NO_CACHE)
def label_instances(out: str, names: list[str], *, min_size: int, block: int) -> dict[str, int]:
    """Connected-component instance labels per image (see :func:`write_instances`)."""
    logger = get_run_logger()
    counts = {}
    for name in names:
        counts[name] = write_instances(out, name, min_size=min_size, block=block)
        logger.info("%s: %d objects of at least %d pixels", name, counts[name], min_size)
    return counts
