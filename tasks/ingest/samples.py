"""Validate one image/mask pair, convert its mask to class ids and write it to the store.

Kept free of Prefect so that Dask workers import it quickly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np

from segflow.tasks.ingest.masks import MaskRules, class_counts, single_channel
from segflow.tasks.ingest.pairs import Pair
from segflow.tasks.storage import files
from segflow.tasks.storage.dataset import DATASET_SHARD, open_dataset
from segflow.tasks.storage.dataset_writer import StoredSample, write_sample
from segflow.tasks.storage.image_io import (
    ImageFormat,
    ImageInfo,
    InputError,
    SizeLimits,
    check_size,
    open_lazy,
    probe_image,
    read_image,
    sha256_file,
)

# Tiled TIFFs above this many pixels are copied region by region instead of decoded whole.
STREAM_PIXELS = 4096 * 4096


def _most_common(formats: Iterable[ImageFormat]) -> ImageFormat | None:
    """The format most of `formats` have; a tie goes to the one seen first."""
    ranked = Counter(formats).most_common(1)
    return ranked[0][0] if ranked else None


def store_format(store: str | Path, sample_ids: Collection[str]) -> ImageFormat | None:
    """The image format of a store holding the committed samples `sample_ids`: the one its
    root attributes record (``image_format``), else (a store written before it was recorded)
    the format of most of its samples, in sample-id order on a tie; None for an empty store."""
    if not sample_ids:
        return None
    dataset = open_dataset(store)
    recorded = dataset.meta.get("image_format")
    if recorded:
        return ImageFormat(int(recorded["channels"]), str(recorded["dtype"]))
    images = (dataset.image(s) for s in sorted(sample_ids))
    return _most_common(ImageFormat(a.shape[0], str(a.dtype)) for a in images)


@dataclass(frozen=True)
class SampleChecks:
    """What a pair must pass beyond readable files and valid masks (see :func:`sample_checks`)."""

    limits: SizeLimits  # header sizes, checked before decoding
    image_format: ImageFormat | None  # the store's channels and dtype; None accepts any


def sample_checks(
    store: str | Path, pairs: Sequence[Pair], sample_ids: Collection[str], limits: SizeLimits
) -> SampleChecks:
    """The checks of an ingest into `store`, which holds the committed samples `sample_ids`.

    The image format is the store's own (:func:`store_format`), or for an empty store the
    format of most of the images in `pairs` whose headers pass `limits` (a tie goes to the
    first sample id), so one odd image in a batch is the one rejected.
    """
    held = store_format(store, sample_ids)
    if held is not None:
        return SampleChecks(limits, held)
    found = []
    for pair in sorted(pairs, key=lambda p: p.sample_id):
        try:
            info = probe_image(pair.image)
            check_size(info, limits)
        except InputError:
            continue  # rejected later, with its reason, by ingest_pair
        found.append(ImageFormat.of(info))
    return SampleChecks(limits, _most_common(found))


def _check_format(image: ImageInfo, expected: ImageFormat | None, store: str | Path) -> None:
    if expected is not None and ImageFormat.of(image) != expected:
        raise InputError(
            image.path,
            f"{ImageFormat.of(image)}, but the store {store} holds {expected} images (one "
            "channel count and dtype per store); convert the image or ingest into another store",
        )


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one pair."""

    sample_id: str
    status: Literal["written", "unchanged", "rejected"]
    path: str = ""
    reason: str = ""


def _check_mask_header(image: ImageInfo, mask: ImageInfo) -> None:
    if (image.height, image.width) != (mask.height, mask.width):
        raise InputError(
            mask.path,
            f"mask is {mask.height}x{mask.width} but image {files.name_of(image.path)} is "
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
    pixels = open_lazy(image, (DATASET_SHARD, DATASET_SHARD))
    source = open_lazy(mask, (DATASET_SHARD, DATASET_SHARD))
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


def _sample_attrs(
    pair: Pair, shas: tuple[str, str], pixels: Any, ids: Any, counts: np.ndarray
) -> tuple[dict, dict]:
    """The image's and the mask's array attributes; `shas` are the files' (image, mask) SHA-256."""
    image_sha, mask_sha = shas
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
    return image_attrs, mask_attrs


def ingest_pair(
    pair: Pair,
    store: str | Path,
    *,
    rules: MaskRules,
    checks: SampleChecks,
    stored: StoredSample | None = None,
    workers: int = 1,
    stream_pixels: int = STREAM_PIXELS,
) -> PairOutcome:
    """Validate one pair and write it to the store unless an identical copy is there.

    Bad input is returned as a ``rejected`` outcome naming the file; the store is untouched.
    Sizes are checked against ``checks.limits`` on the headers, before any pixel is decoded;
    an image whose channels or dtype differ from ``checks.image_format`` is rejected. Tiled
    TIFFs with more than `stream_pixels` pixels are copied region by region (shard by shard)
    with `workers` threads, so memory is bounded by a few shards, not by the image.
    """
    shas = sha256_file(pair.image), sha256_file(pair.mask)
    if stored and (stored.image_sha256, stored.mask_sha256) == shas:
        return PairOutcome(pair.sample_id, "unchanged")
    try:
        image, mask = probe_image(pair.image), probe_image(pair.mask)
        for info in (image, mask):
            check_size(info, checks.limits)
        _check_format(image, checks.image_format, store)
        _check_mask_header(image, mask)
        lazy = image.pixels > stream_pixels and image.tiled and mask.tiled
        if lazy:
            pixels, ids, counts = _lazy_pair(image, mask, rules, workers)
        else:
            pixels, ids, counts = _eager_pair(image, mask, rules)
        image_attrs, mask_attrs = _sample_attrs(pair, shas, pixels, ids, counts)
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


def ingest_pair_with(pair: Pair, stored: StoredSample | None, options: dict) -> PairOutcome:
    """:func:`ingest_pair` with its keyword options in one dict (Client.map reserves `workers`)."""
    return ingest_pair(pair, stored=stored, **options)
