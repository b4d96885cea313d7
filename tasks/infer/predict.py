"""Prepare the prediction store and fan its blocks out to Dask."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zarr
from dask.distributed import as_completed

from segflow.tasks.infer.block import InferSettings, predict_block
from segflow.tasks.infer.sources import Source
from segflow.tasks.runtime.cluster import dask_client, default_workers
from segflow.tasks.storage.bundle import bundle_digest, load_bundle
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.paths import local_path
from segflow.tasks.storage.predictions import (
    PREDICTIONS_SCHEMA_VERSION,
    block_done,
    create_image_arrays,
)
from segflow.tasks.tracking.model import fetch_bundle
from segflow.tasks.tracking.registry import resolve_model


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
            "schema_version": PREDICTIONS_SCHEMA_VERSION,
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
