"""The segflow dataset store: a Zarr v3 group with one image and one mask array per sample.

Layout (a public contract; ``DATASET_SCHEMA_VERSION`` changes when it does)::

    zarr.json               attributes["segflow"]: schema_version, class_names, split, rejected, ...
    images/<sample_id>      (C, H, W) source dtype, 256² chunks in 1024² shards, blosc-zstd
    masks/<sample_id>       (H, W) uint8 class ids, same chunking
    .staging/               arrays being written (not part of the hierarchy)

A sample is written into ``.staging`` and renamed into place, so a crash leaves either the old
sample, no sample, or the new one, never a half-written array under ``images/`` or ``masks/``.
Every sample array lives in its own shards, so parallel writers never share one.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from segflow.tasks.storage.dataset import DATASET_CHUNK, DATASET_SCHEMA_VERSION, DATASET_SHARD
from segflow.tasks.storage.paths import local_path

log = logging.getLogger(__name__)


_STAGING = ".staging"


_COMPRESSORS = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def init_store(store: str | Path, *, class_names: tuple[str, ...]) -> zarr.Group:
    """Create the store, or open an existing one after checking that it is compatible.

    Leftovers of an interrupted run in ``.staging`` are removed.

    Raises
    ------
    ValueError
        The path holds something else, another schema version or other class names.
    """
    path = local_path(store)
    if path.exists() and not (path / "zarr.json").exists() and any(path.iterdir()):
        raise ValueError(f"{path}: exists and is not a Zarr store; refusing to write into it")
    root = zarr.open_group(path, mode="a", zarr_format=3)
    meta = dict(root.attrs).get("segflow")
    if meta is not None:
        if meta.get("schema_version") != DATASET_SCHEMA_VERSION:
            raise ValueError(
                f"{path}: schema version {meta.get('schema_version')} is not "
                f"{DATASET_SCHEMA_VERSION}"
            )
        if tuple(meta.get("class_names", ())) != tuple(class_names):
            raise ValueError(
                f"{path}: holds classes {meta.get('class_names')}, not {list(class_names)}; "
                "ingest into a new store or pass the same classes"
            )
    else:
        root.attrs["segflow"] = {
            "schema_version": DATASET_SCHEMA_VERSION,
            "class_names": list(class_names),
        }
    for name in ("images", "masks"):
        if name not in root:
            root.create_group(name)
    remove_staging(path)
    return root


def remove_staging(store: str | Path) -> None:
    """Delete the staging folder and anything an interrupted run left in it."""
    shutil.rmtree(local_path(store) / _STAGING, ignore_errors=True)


@dataclass(frozen=True)
class StoredSample:
    """Attributes of a committed sample."""

    sample_id: str
    image_sha256: str
    mask_sha256: str
    class_counts: tuple[int, ...]


def committed_samples(store: str | Path) -> dict[str, StoredSample]:
    """Samples whose image and mask are both in place and belong together."""
    root = zarr.open_group(local_path(store), mode="r")
    images, masks = root["images"], root["masks"]
    found: dict[str, StoredSample] = {}
    for sample_id in sorted(set(images.array_keys()) & set(masks.array_keys())):
        image_attrs, mask_attrs = dict(images[sample_id].attrs), dict(masks[sample_id].attrs)
        if mask_attrs.get("image_sha256") != image_attrs.get("sha256"):
            continue  # a crash between the two renames: re-ingest
        found[sample_id] = StoredSample(
            sample_id,
            image_attrs["sha256"],
            mask_attrs["sha256"],
            tuple(mask_attrs["class_counts"]),
        )
    return found


def _create(path: Path, shape: tuple[int, ...], dtype: np.dtype, attrs: Mapping[str, Any]):
    lead = shape[:-2]
    return zarr.create_array(
        path,
        shape=shape,
        dtype=dtype,
        chunks=(*lead, DATASET_CHUNK, DATASET_CHUNK),
        shards=(*lead, DATASET_SHARD, DATASET_SHARD),
        compressors=_COMPRESSORS,
        fill_value=0,
        attributes=dict(attrs),
        dimension_names=("c", "y", "x")[-len(shape) :],
        zarr_format=3,
    )


def _write(target: zarr.Array, data: np.ndarray | da.Array, workers: int) -> None:
    if isinstance(data, da.Array):
        # Dask chunks equal the shard shape, so each task writes whole shards of its own.
        data = data.rechunk(target.shards)
        da.store(data, target, lock=False, scheduler="threads", num_workers=workers)
    else:
        target[...] = data


def write_sample(
    store: str | Path,
    sample_id: str,
    image: np.ndarray | da.Array,
    mask: np.ndarray | da.Array,
    *,
    image_attrs: Mapping[str, Any],
    mask_attrs: Mapping[str, Any],
    workers: int = 1,
) -> None:
    """Write one sample and swap it into place, replacing any earlier version.

    Parameters
    ----------
    image
        ``(C, H, W)``, NumPy or Dask (written region by region, shard-aligned).
    mask
        ``(H, W)`` uint8 class ids.
    image_attrs, mask_attrs
        Must hold ``sha256``; `mask_attrs` also ``image_sha256`` tying the pair together.
    """
    path = local_path(store)
    staging = path / _STAGING / f"{sample_id}-{uuid.uuid4().hex[:8]}"
    staged = {"images": staging / "image", "masks": staging / "mask"}
    for group, data, attrs in (("images", image, image_attrs), ("masks", mask, mask_attrs)):
        _write(_create(staged[group], data.shape, data.dtype, attrs), data, workers)
    for group in ("images", "masks"):
        final = path / group / sample_id
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged[group], final)
    shutil.rmtree(staging, ignore_errors=True)


def write_index(store: str | Path, index: Mapping[str, Any]) -> None:
    """Merge `index` (split, rejected, summary counts) into the root ``segflow`` attributes."""
    root = zarr.open_group(local_path(store), mode="r+")
    remove_staging(store)
    meta = dict(root.attrs["segflow"])
    meta.update(index)
    root.attrs["segflow"] = meta
