"""The segflow dataset store: a Zarr v3 group with one image and one mask array per sample.

Layout (a public contract; ``DATASET_SCHEMA_VERSION`` changes when it does)::

    zarr.json               attributes["segflow"]: schema_version, class_names, split, rejected, ...
    images/<sample_id>      (C, H, W) source dtype, 256² chunks in 1024² shards (2048² on
                            object storage), blosc-zstd
    masks/<sample_id>       (H, W) uint8 class ids, same chunking

This module reads a store (the API later stages use); :mod:`.dataset_writer` writes one.
A store on object storage is read through a bounded in-memory cache of the bytes fetched
(:data:`REMOTE_CACHE_BYTES`), so training's random patches do not fetch the same chunks again
every epoch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import dask.array as da
import zarr
from zarr.experimental.cache_store import CacheStore
from zarr.storage import MemoryStore

from segflow.tasks.storage.urls import is_remote, zarr_store

SPLITS = ("train", "val", "test")
DATASET_SCHEMA_VERSION = 1
DATASET_CHUNK = 256  # inner chunk side
DATASET_SHARD = 1024  # shard side: every sample lives in shards of its own
# Shard side of a store on object storage: one object per shard, so a larger one costs fewer
# requests (an HRF pair: 24 shard PUTs -> 8), and matches inference's 2048² blocks, which read
# remote shards whole (benchmarks/README.md, "Object storage").
REMOTE_DATASET_SHARD = 2048

# Bytes of a remote store kept in memory per opened store (least recently used evicted): the
# encoded chunks of a few thousand 256² RGB patches.
REMOTE_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Dataset:
    """A read-only view of a dataset store.

    Open it with :func:`open_dataset`; arrays are Zarr arrays (lazy, read on slicing) or Dask
    arrays chunked like the store.
    """

    path: str
    root: zarr.Group

    @cached_property
    def meta(self) -> dict[str, Any]:
        """The root ``segflow`` attributes (schema version, classes, split, rejected...)."""
        return dict(self.root.attrs["segflow"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def rejected(self) -> list[dict[str, str]]:
        return list(self.meta.get("rejected", []))

    def samples(self, split: str | None = None) -> list[str]:
        """Sample ids of one split, or of all splits when `split` is None."""
        assignment = self.meta.get("split", {})
        if split is None:
            return sorted(s for name in SPLITS for s in assignment.get(name, []))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        return list(assignment.get(split, []))

    def image(self, sample_id: str) -> zarr.Array:
        """``(C, H, W)`` image array of a sample."""
        return self._array("images", sample_id)

    def mask(self, sample_id: str) -> zarr.Array:
        """``(H, W)`` uint8 class-id array of a sample."""
        return self._array("masks", sample_id)

    def image_dask(self, sample_id: str) -> da.Array:
        """The image as a Dask array chunked like the store's shards."""
        array = self.image(sample_id)
        return da.from_zarr(array, chunks=array.shards or array.chunks)

    def mask_dask(self, sample_id: str) -> da.Array:
        """The mask as a Dask array chunked like the store's shards."""
        array = self.mask(sample_id)
        return da.from_zarr(array, chunks=array.shards or array.chunks)

    def class_counts(self, sample_id: str) -> list[int]:
        """Pixels per class of a sample, recorded at ingest."""
        return list(self.mask(sample_id).attrs["class_counts"])

    def _array(self, group: str, sample_id: str) -> zarr.Array:
        try:
            return self.root[f"{group}/{sample_id}"]
        except KeyError:
            raise KeyError(f"{self.path}: no sample {sample_id!r} in {group}/") from None


def open_dataset(path: str | Path) -> Dataset:
    """Open a dataset store written by ``segflow ingest``.

    Raises
    ------
    ValueError
        Not a segflow store, or written with another schema version.
    """
    store = zarr_store(path, read_only=True)
    if is_remote(path):
        store = CacheStore(store, cache_store=MemoryStore(), max_size=REMOTE_CACHE_BYTES)
    try:
        root = zarr.open_group(store, mode="r", zarr_format=3)
    except FileNotFoundError:
        raise ValueError(f"{path}: no Zarr store here") from None
    meta = root.attrs.get("segflow")
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a segflow dataset store (no 'segflow' attributes)")
    if meta.get("schema_version") != DATASET_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema version {meta.get('schema_version')}, "
            f"expected {DATASET_SCHEMA_VERSION}"
        )
    return Dataset(str(path), root)


def dataset_fingerprint(store: Dataset) -> str:
    """SHA-256 over every sample's checksums and the split: changes iff the data does."""
    digest = hashlib.sha256()
    for sample_id in store.samples():
        digest.update(sample_id.encode())
        digest.update(store.image(sample_id).attrs["sha256"].encode())
        digest.update(store.mask(sample_id).attrs["sha256"].encode())
    digest.update(json.dumps(store.meta.get("split", {}), sort_keys=True).encode())
    return digest.hexdigest()
