"""Ingest image/mask pairs into a dataset store: validate, convert, write, index.

Plain functions do the work; the ``@task`` wrappers at the bottom add retries and logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import dask.array as da
import numpy as np
from dask.distributed import as_completed
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cluster import dask_client, default_workers
from tasks.image_io import ImageInfo, InputError, open_lazy, probe_image, read_image, sha256_file
from tasks.masks import class_counts, class_lookup, single_channel
from tasks.pairs import Pair, Rejection, find_pairs
from tasks.split import assign_splits
from tasks.store import (
    SHARD,
    StoredSample,
    committed_samples,
    init_store,
    read_index,
    write_index,
    write_sample,
)

# TIFFs above this many pixels are copied region by region instead of decoded whole.
STREAM_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one pair."""

    sample_id: str
    status: Literal["written", "unchanged", "rejected"]
    path: str = ""
    reason: str = ""


@dataclass(frozen=True)
class MaskRules:
    """How source mask values become class ids (see :func:`tasks.masks.class_lookup`)."""

    num_classes: int = 2
    foreground_value: int | None = None
    invert: bool = False

    def lookup(self, values: np.ndarray, path: Path) -> np.ndarray:
        try:
            return class_lookup(
                values,
                num_classes=self.num_classes,
                foreground_value=self.foreground_value,
                invert=self.invert,
            )
        except ValueError as exc:
            raise InputError(path, str(exc)) from exc


def _check_mask_header(image: ImageInfo, mask: ImageInfo) -> None:
    if (image.height, image.width) != (mask.height, mask.width):
        raise InputError(
            mask.path,
            f"mask is {mask.height}x{mask.width} but image {image.path.name} is "
            f"{image.height}x{image.width}",
        )
    if mask.dtype == np.uint16 and mask.channels > 1:
        raise InputError(mask.path, "16-bit colour masks are not supported")


def _eager_pair(image: ImageInfo, mask: ImageInfo, rules: MaskRules):
    pixels = read_image(image)
    try:
        source = single_channel(read_image(mask))
    except ValueError as exc:
        raise InputError(mask.path, str(exc)) from exc
    values = np.flatnonzero(np.bincount(source.ravel()))
    ids = rules.lookup(values, mask.path)[source]
    return pixels, ids, class_counts(ids, rules.num_classes)


def _lazy_pair(image: ImageInfo, mask: ImageInfo, rules: MaskRules, workers: int):
    pixels = open_lazy(image, (SHARD, SHARD))
    source = open_lazy(mask, (SHARD, SHARD))
    colour = source[:3] if mask.channels >= 3 else source[:1]
    single = source[0]
    # One streaming pass over the mask: value histogram (validation and class counts together).
    hist, consistent = da.compute(
        da.bincount(single.ravel(), minlength=65536 if mask.dtype == np.uint16 else 256),
        (colour == colour[:1]).all(),
        scheduler="threads",
        num_workers=workers,
    )
    if not consistent:
        raise InputError(mask.path, "colour mask with differing channels")
    values = np.flatnonzero(hist)
    table = rules.lookup(values, mask.path)
    counts = np.bincount(table[values], weights=hist[values], minlength=rules.num_classes)
    ids = single.map_blocks(lambda block: table[block], dtype=np.uint8)
    return pixels, ids, counts.astype(np.int64)[: rules.num_classes]


def ingest_pair(
    pair: Pair,
    store: str | Path,
    *,
    rules: MaskRules,
    max_pixels: int,
    stored: StoredSample | None = None,
    workers: int = 1,
    stream_pixels: int = STREAM_PIXELS,
) -> PairOutcome:
    """Validate one pair and write it to the store unless an identical copy is there.

    Bad input is returned as a ``rejected`` outcome naming the file; the store is untouched.
    TIFFs with more than `stream_pixels` pixels are copied region by region (shard by shard)
    with `workers` threads, so memory is bounded by a few shards, not by the image.
    """
    image_sha, mask_sha = sha256_file(pair.image), sha256_file(pair.mask)
    if stored and (stored.image_sha256, stored.mask_sha256) == (image_sha, mask_sha):
        return PairOutcome(pair.sample_id, "unchanged")
    try:
        image = probe_image(pair.image, max_pixels=max_pixels)
        mask = probe_image(pair.mask, max_pixels=max_pixels)
        _check_mask_header(image, mask)
        lazy = image.pixels > stream_pixels and image.is_tiff and mask.is_tiff
        if lazy:
            pixels, ids, counts = _lazy_pair(image, mask, rules, workers)
        else:
            pixels, ids, counts = _eager_pair(image, mask, rules)
        image_attrs = {
            "source": str(pair.image),
            "sha256": image_sha,
            "shape": list(pixels.shape),
            "dtype": str(pixels.dtype),
        }
        mask_attrs = {
            "source": str(pair.mask),
            "sha256": mask_sha,
            "image_sha256": image_sha,
            "shape": list(ids.shape),
            "class_counts": [int(c) for c in counts],
        }
        try:
            write_sample(
                store,
                pair.sample_id,
                pixels,
                ids,
                image_attrs=image_attrs,
                mask_attrs=mask_attrs,
                workers=workers,
            )
        except Exception as exc:
            if not lazy:
                raise
            # Lazy reads decode while writing: a corrupt tile surfaces here.
            problem = f"failed while copying ({type(exc).__name__}: {exc})"
            raise InputError(pair.image, problem) from exc
    except InputError as exc:
        return PairOutcome(pair.sample_id, "rejected", exc.path, exc.problem)
    return PairOutcome(pair.sample_id, "written", str(pair.image))


def _ingest_one(pair: Pair, stored: StoredSample | None, options: dict) -> PairOutcome:
    # Options travel as one dict: Client.map reserves keywords such as `workers`.
    return ingest_pair(pair, stored=stored, **options)


def _stratum(counts: tuple[int, ...], rarity: list[int]) -> int:
    """Rank of the rarest foreground class present: 0 when none, larger when rarer."""
    for position, cls in enumerate(rarity):
        if cls > 0 and counts[cls] > 0:
            return len(rarity) - position
    return 0


def build_index(
    store: str | Path,
    *,
    rejected: list[Rejection],
    fractions: Mapping[str, float],
    seed: int,
) -> dict:
    """Compute the split and summary of the committed samples and write them to the store.

    Earlier split assignments are kept when the seed and fractions are unchanged.
    """
    samples = committed_samples(store)
    meta = read_index(store)
    num_classes = len(meta["class_names"])
    totals = np.zeros(num_classes, dtype=np.int64)
    for sample in samples.values():
        totals += np.asarray(sample.class_counts, dtype=np.int64)
    rarity = [int(c) for c in np.argsort(totals, kind="stable")]
    strata = {s.sample_id: _stratum(s.class_counts, rarity) for s in samples.values()}
    same = meta.get("split_seed") == seed and meta.get("split_fractions") == dict(fractions)
    split = assign_splits(
        strata, fractions=fractions, seed=seed, previous=meta.get("split") if same else None
    )
    index = {
        "num_samples": len(samples),
        "class_counts": [int(t) for t in totals],
        "split": split,
        "split_seed": seed,
        "split_fractions": dict(fractions),
        "rejected": [asdict(r) for r in rejected],
    }
    write_index(store, index)
    return index


# Prefect tasks: thin wrappers that add logging and retries on I/O.


@task(name="prepare-store", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def prepare_store(store: str, class_names: tuple[str, ...]) -> dict[str, StoredSample]:
    """Create or check the store and list what it already holds."""
    init_store(store, class_names=class_names)
    samples = committed_samples(store)
    get_run_logger().info("%s holds %d samples", store, len(samples))
    return samples


@task(name="discover-pairs", cache_policy=NO_CACHE)
def discover_pairs(
    source: str, images_dir: str, masks_dir: str, mask_suffix: str
) -> tuple[list[Pair], list[Rejection]]:
    """Match images with masks under `source`."""
    pairs, rejected = find_pairs(
        source, images_dir=images_dir, masks_dir=masks_dir, mask_suffix=mask_suffix
    )
    get_run_logger().info("found %d pairs, %d unpaired files", len(pairs), len(rejected))
    return pairs, rejected


@task(name="write-samples", cache_policy=NO_CACHE)
def write_samples(
    pairs: list[Pair],
    store: str,
    rules: MaskRules,
    max_pixels: int,
    stored: dict[str, StoredSample],
    workers: int | None,
    dask_address: str | None,
) -> list[PairOutcome]:
    """Ingest every pair on a Dask cluster (in this process when one local worker is asked for)."""
    log = get_run_logger()
    workers = workers or default_workers()
    options = {"store": store, "rules": rules, "max_pixels": max_pixels, "workers": workers}
    outcomes: list[PairOutcome] = []

    def record(outcome: PairOutcome) -> None:
        outcomes.append(outcome)
        log.info("[%d/%d] %s: %s", len(outcomes), len(pairs), outcome.sample_id, outcome.status)
        if outcome.status == "rejected":
            log.warning("rejected %s: %s", outcome.path, outcome.reason)

    if workers == 1 and not dask_address:
        for pair in pairs:
            record(ingest_pair(pair, stored=stored.get(pair.sample_id), **options))
        return outcomes
    with dask_client(dask_address, workers=workers) as client:
        log.info("Dask dashboard: %s", client.dashboard_link)
        previous = [stored.get(pair.sample_id) for pair in pairs]
        futures = client.map(_ingest_one, pairs, previous, options=options, pure=False)
        for future in as_completed(futures):
            record(future.result())
    return outcomes


@task(name="index-store", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def index_store(
    store: str, rejected: list[Rejection], fractions: dict[str, float], seed: int
) -> dict:
    """Write the split and the summary into the store."""
    return build_index(store, rejected=rejected, fractions=fractions, seed=seed)
