"""Inference stage: find inputs, prepare the prediction store, fan blocks out to Dask.

Plain functions do the work; the ``@task`` wrappers at the bottom add logging.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zarr
from dask.distributed import as_completed
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.block_inference import InferSettings, predict_block
from tasks.cluster import dask_client, default_workers
from tasks.model_bundle import load_bundle
from tasks.predictions import (
    SCHEMA_VERSION,
    block_done,
    blocks,
    create_image_arrays,
    write_instances,
)
from tasks.registry import resolve_model
from tasks.sources import Source, find_sources
from tasks.store import local_path
from tasks.tracking import fetch_bundle


def prepare_predictions(
    sources: list[Source], out: str, *, model_uri: str, settings: dict[str, Any]
) -> tuple[str, list[str]]:
    """Create the prediction store: a copy of the model bundle, root metadata, empty arrays.

    Returns the local bundle folder (workers load the model from it) and the class names.
    """
    root = zarr.open_group(local_path(out), mode="a")
    bundle = local_path(out) / "model"
    with tempfile.TemporaryDirectory() as tmp:
        fetched = fetch_bundle(model_uri, Path(tmp) / "bundle")
        digest = bundle_digest(fetched)
        previous = root.attrs.get("segflow", {}).get("model_sha256")
        if previous not in (None, digest):
            raise ValueError(
                f"{out}: was written by another model (bundle sha256 {previous[:12]}..., now "
                f"{digest[:12]}...); resuming would mix models: write to a new output"
            )
        if "model" not in root:
            root.create_group("model", attributes={"segflow": "the model bundle used"})
        shutil.copytree(fetched, bundle, dirs_exist_ok=True)
    model = load_bundle(bundle)
    classes = model.config.num_classes
    bad = [s.name for s in sources if s.shape[0] != model.config.in_channels]
    if bad:
        raise ValueError(
            f"the model takes {model.config.in_channels} channels; these inputs have others: "
            f"{bad[:5]}"
        )
    meta = dict(root.attrs.get("segflow", {}))
    meta.update(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": "predictions",
            "model_uri": model_uri,
            "model": resolve_model(model_uri).to_dict(),
            "model_sha256": digest,
            "settings": settings,
            "class_names": list(model.class_names),
            "binary_class": model.metadata.get("binary_class"),
        }
    )
    root.attrs["segflow"] = meta
    for source in sources:
        create_image_arrays(
            out,
            source.name,
            shape=source.shape[1:],
            classes=classes,
            block=settings["block"],
            probability_dtype=settings["probability_dtype"],
            attrs={"source": source.path, "key": source.key, "model_uri": model_uri},
        )
    return str(bundle), list(model.class_names)


def bundle_digest(folder: Path) -> str:
    """SHA-256 over the bundle's files (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != "zarr.json":
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_blocks(
    sources: list[Source],
    out: str,
    settings: InferSettings,
    *,
    workers: int,
    dask_address: str | None,
    log: Callable[[str], None],
) -> tuple[int, int, dict[str, str]]:
    """Predict every block not yet written; returns (blocks done now, already done, failures).

    A failing block marks its image failed (reason kept) and the other images go on.
    """
    jobs = [
        (source, region)
        for source in sources
        for region in blocks(source.shape[1:], settings.block)
        if not block_done(out, source.name, region, settings.block)
    ]
    total = sum(len(blocks(s.shape[1:], settings.block)) for s in sources)
    skipped = total - len(jobs)
    failures: dict[str, str] = {}
    if not jobs:
        return 0, skipped, failures
    every = max(1, len(jobs) // 20)
    done = succeeded = 0

    def record(source: Source, error: BaseException | None) -> None:
        nonlocal done, succeeded
        done += 1
        if error is None:
            succeeded += 1
        else:  # one image's failure must not stop the others
            failures.setdefault(source.name, f"{type(error).__name__}: {error}")
        if done % every == 0 or done == len(jobs):
            log(f"[{done}/{len(jobs)}] blocks predicted")

    if workers == 1 and not dask_address:  # no cluster for one local worker
        for source, region in jobs:
            try:
                predict_block(source, out, region, settings)
                record(source, None)
            except Exception as exc:
                record(source, exc)
        return succeeded, skipped, failures
    with dask_client(dask_address, workers=workers) as client:
        log(
            f"Dask dashboard: {client.dashboard_link}; {len(jobs)} blocks to predict, "
            f"{skipped} already done"
        )
        futures = {
            client.submit(predict_block, source, out, region, settings, pure=False): source
            for source, region in jobs
        }
        for future in as_completed(futures):
            error = future.exception()
            record(futures[future], error)
    return succeeded, skipped, failures


# Prefect tasks: thin wrappers that add logging.


@task(name="find-inputs", cache_policy=NO_CACHE)
def find_inputs(spec: str, split: str | None) -> tuple[list[Source], list[tuple[str, str]]]:
    """Find the images to predict (see :func:`tasks.sources.find_sources`)."""
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


def default_infer_workers(device: str) -> int:
    """One worker per GPU on CUDA, else one per two cores (each runs two torch threads).

    On this project's 2-core machine one worker of two threads beat two of one thread on every
    image measured (HRF bf16 2.46 vs 2.14 MP/s; benchmarks/README.md): torch's own threads
    share a tile's work with less memory than a second copy of the model and its activations.
    """
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, default_workers() // 2)


@task(name="label-instances", cache_policy=NO_CACHE)
def label_instances(out: str, names: list[str], *, min_size: int, block: int) -> dict[str, int]:
    """Connected-component instance labels per image (see :func:`write_instances`)."""
    logger = get_run_logger()
    counts = {}
    for name in names:
        counts[name] = write_instances(out, name, min_size=min_size, block=block)
        logger.info("%s: %d objects of at least %d pixels", name, counts[name], min_size)
    return counts
