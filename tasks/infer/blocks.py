"""Dask-parallel tiled inference: one task per shard-aligned block, the model cached per worker.

:func:`predict_blocks` fans the blocks not yet written out to Dask; each :func:`predict_block`
reads its input region with a halo from storage, predicts it with
:func:`segflow.tasks.infer.tiling.predict_region` and writes its own shards, so no pixels pass
through the scheduler and memory per worker is bounded by a block; what the blocks of an image
need from the store is read once (:mod:`segflow.tasks.infer.targets`). Kept free of Prefect so
that workers import it quickly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from dask.distributed import as_completed

from segflow.models.fusion import fold_batch_norm
from segflow.tasks.infer.placement import block_resources, worker_device
from segflow.tasks.infer.sources import Source
from segflow.tasks.infer.targets import BlockTarget, block_target, block_targets
from segflow.tasks.infer.tiling import Predictor, Tiling, predict_region
from segflow.tasks.runtime.allocator import retain_freed_memory
from segflow.tasks.runtime.cluster import advertised_resources, dask_client, default_workers
from segflow.tasks.runtime.device import (
    DeviceName,
    PrecisionName,
    autocast,
    resolve_device,
    resolve_precision,
)
from segflow.tasks.storage.bundle import ModelBundle, load_bundle
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import ProbabilityDtype, block_done, write_block
from segflow.tasks.storage.stored_bundle import extract_bundle

Region = tuple[int, int, int, int]  # (y0, y1, x0, x1)


@dataclass(frozen=True)
class BlockSettings:
    """Everything a worker needs besides the block; small and picklable.

    Built by :meth:`segflow.flows.config.InferConfig.block_settings`.
    """

    bundle: str  # local folder of the model bundle, extracted from the store where missing
    tiling: Tiling
    batch: int  # tiles per forward pass
    tta: bool
    threshold: float | None  # None: the model's, chosen on validation
    precision: PrecisionName
    device: DeviceName
    channels_last: bool
    probability_dtype: ProbabilityDtype
    block: int  # pixels per side of a block (a Dask task) and of a shard
    torch_threads: int  # per worker


@dataclass(frozen=True)
class Parallelism:
    """How the work is spread: Dask workers, tiles per forward, torch threads per worker."""

    workers: int
    batch: int
    torch_threads: int


def resolve_parallelism(
    device: DeviceName, *, workers: int | None, batch: int | None, torch_threads: int | None
) -> Parallelism:
    """The given values, and this machine's default for each one that is None.

    - `workers`: one per GPU on CUDA, else one per two cores. On this project's 2-core machine
      one worker of two threads beat two of one thread on every image measured (HRF bf16 2.46
      vs 2.14 MP/s; benchmarks/README.md): torch's own threads share a tile's work with less
      memory than a second copy of the model and its activations.
    - `batch`: 4 on CUDA; 1 on CPU, where a batch of four 1088² tiles took 0.536 s a tile and
      one alone 0.466 s (bf16, base 16; bigger tensors are mmapped and page-faulted afresh on
      every pass, see benchmarks/README.md).
    - `torch_threads`: cores / workers, at least 1.

    Raises
    ------
    ValueError
        `batch` is None and `device` is ``cuda`` on a machine without CUDA.
    """
    if workers is None:
        if device != "cpu" and torch.cuda.is_available():
            workers = torch.cuda.device_count()
        else:
            workers = max(1, default_workers() // 2)
    if batch is None:
        batch = 4 if resolve_device(device).type == "cuda" else 1
    if torch_threads is None:
        torch_threads = max(1, (os.cpu_count() or 1) // workers)
    return Parallelism(workers=workers, batch=batch, torch_threads=torch_threads)


_BUNDLES: dict[tuple[str, str, str, bool], ModelBundle] = {}


def worker_model(path: str, digest: str, device: torch.device, channels_last: bool) -> ModelBundle:
    """The bundle at `path` on `device`, loaded once per process and reused for every block.

    Cached by `path` and the bundle's `digest` (the SHA-256 that
    :func:`segflow.tasks.infer.output.prepare_predictions` records): a long-lived worker
    (``--dask-address``) that meets a new model at an output path it has seen before loads the
    new model.

    BatchNorm is folded into the convolutions (:func:`segflow.models.fusion.fold_batch_norm`). With
    `channels_last` the weights take that layout too: for 1-channel inputs only the weights
    decide the layout the convolutions run in (measured 2x faster in bf16 here).
    """
    key = (path, digest, str(device), channels_last)
    if key not in _BUNDLES:
        retain_freed_memory()  # activations stay mapped between forward passes
        bundle = load_bundle(path)
        bundle.ensemble = fold_batch_norm(bundle.ensemble).to(device)
        if channels_last:
            bundle.ensemble.to(memory_format=torch.channels_last)
        _BUNDLES[key] = bundle
    return _BUNDLES[key]


def make_predictor(
    bundle: ModelBundle,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    *,
    channels_last: bool,
    tta: bool,
) -> Predictor:
    """Raw tiles ``(B, C, t, t)`` -> probabilities ``(B, K, t, t)`` float32 NumPy.

    With `tta`, the mean over the identity and the three flips (vertical, horizontal, both).
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    flips = [(), (2,), (3,), (2, 3)] if tta else [()]

    @torch.inference_mode()
    def predict(tiles: np.ndarray) -> np.ndarray:
        x = bundle.normalize_tensor(torch.from_numpy(tiles).to(device))  # raw pixels move
        total = None
        with autocast(device, amp_dtype):
            for dims in flips:
                xi = torch.flip(x, dims) if dims else x
                p = bundle.ensemble(xi.contiguous(memory_format=memory_format)).float()
                p = torch.flip(p, dims) if dims else p
                total = p if total is None else total + p
        if len(flips) > 1:
            total /= len(flips)
        return total.cpu().numpy()

    return predict


def predict_block(
    source: Source,
    out: str,
    region: Region,
    settings: BlockSettings,
    target: BlockTarget | None = None,
) -> tuple[str, Region]:
    """Predict one block ``region = (y0, y1, x0, x1)`` of one image and write it to the
    prediction store `out` (probabilities, then the mask that marks the block done).

    `target`: shared by the image's blocks (:mod:`~segflow.tasks.infer.targets`); None reads
    it here.
    """
    torch.set_num_threads(settings.torch_threads)
    device = worker_device(settings.device)
    target = target or block_target(out, source.name)
    digest = target.digest
    folder = str(extract_bundle(out, settings.bundle, digest))  # a no-op where it is
    bundle = worker_model(folder, digest, device, settings.channels_last)
    predictor = make_predictor(
        bundle,
        device,
        resolve_precision(settings.precision, device),
        channels_last=settings.channels_last,
        tta=settings.tta,
    )
    probs = predict_region(
        source.region, source.shape[1:], region, predictor, settings.tiling, batch=settings.batch
    )
    write_block(
        out,
        source.name,
        region,
        probs,
        threshold=bundle.threshold if settings.threshold is None else settings.threshold,
        probability_dtype=settings.probability_dtype,
        arrays=target.arrays,
    )
    return source.name, region


Outcome = tuple[Source, BaseException | None]  # a block's image, and its error if it failed
Job = tuple[Source, Region, BlockTarget | None]


def _in_process(jobs: list[Job], out: str, settings: BlockSettings) -> Iterator[Outcome]:
    """Predict the blocks one after another in this process."""
    for source, region, target in jobs:
        try:
            predict_block(source, out, region, settings, target)
        except Exception as exc:  # one image's failure must not stop the others
            yield source, exc
        else:
            yield source, None


def _on_dask(
    jobs: list[Job],
    out: str,
    settings: BlockSettings,
    workers: int,
    dask_address: str | None,
    log: Callable[[str], None],
    skipped: int,
) -> Iterator[Outcome]:
    """Predict the blocks on a Dask cluster, yielding each outcome as it arrives; on a cluster
    with GPU workers, only on those, one block per GPU at a time (:func:`block_resources`)."""
    with dask_client(dask_address, workers=workers) as client:
        resources = block_resources(advertised_resources(client), settings.device)
        log(
            f"Dask dashboard: {client.dashboard_link}; {len(jobs)} blocks to predict, "
            f"{skipped} already done" + (", one GPU worker each" if resources else "")
        )
        submit = partial(client.submit, pure=False, resources=resources)
        futures = {
            submit(predict_block, source, out, region, settings, target): source
            for source, region, target in jobs
        }
        for future in as_completed(futures):
            yield futures[future], future.exception()


def predict_blocks(
    sources: list[Source],
    out: str,
    settings: BlockSettings,
    *,
    workers: int,
    dask_address: str | None,
    log: Callable[[str], None],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int, dict[str, str]]:
    """Predict every block not yet written, on `workers` local Dask workers or the cluster at
    `dask_address` (one local worker runs in this process, without a cluster).

    A failing block marks its image failed (reason kept) and the other images go on. Every
    5 % of the blocks, `log` gets a line and ``progress(blocks done, blocks in all)`` is called
    (the blocks already done count as done).

    Returns
    -------
    predicted, skipped, failures
        Blocks predicted now, blocks already done, and image name -> ``"ErrorType: message"``.
    """
    todo = [
        (source, region)
        for source in sources
        for region in blocks(source.shape[1:], settings.block)
        if not block_done(out, source.name, region, settings.block)
    ]
    skipped = sum(len(blocks(s.shape[1:], settings.block)) for s in sources) - len(todo)
    if not todo:
        return 0, skipped, {}
    targets = block_targets(out, list(dict.fromkeys(source.name for source, _ in todo)))
    jobs = [(source, region, targets[source.name]) for source, region in todo]
    if workers == 1 and not dask_address:  # no cluster for one local worker
        outcomes = _in_process(jobs, out, settings)
    else:
        outcomes = _on_dask(jobs, out, settings, workers, dask_address, log, skipped)
    failures: dict[str, str] = {}
    succeeded = 0
    every = max(1, len(jobs) // 20)
    for done, (source, error) in enumerate(outcomes, start=1):
        if error is None:
            succeeded += 1
        else:
            failures.setdefault(source.name, f"{type(error).__name__}: {error}")
        if done % every == 0 or done == len(jobs):
            log(f"[{done}/{len(jobs)}] blocks predicted")
            if progress is not None:
                progress(skipped + done, skipped + len(jobs))
    return succeeded, skipped, failures
