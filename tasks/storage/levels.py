"""One pyramid level of a prediction store image, opened once and written block after block.

A level is two arrays (:mod:`segflow.tasks.storage.predictions`): probabilities ``(K, H, W)``
and class ids ``(1, H, W)``. Opening them reads their metadata; every block written through
them after that reads none, so on object storage a block costs one PUT per shard and nothing
else (:mod:`segflow.tasks.storage.staging`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zarr

from segflow.tasks.storage.staging import StagedArray, staged
from segflow.tasks.storage.urls import open_group

# An all-background block must still write its shard: the shard's existence marks it done.
# Zarr 3 keeps this setting on the array object only (not in the metadata; zarr.open_array
# ignores a `config` argument), so every writer applies it with `writable`.
_ALWAYS_WRITE = {"write_empty_chunks": True}


def writable(array: zarr.Array) -> zarr.Array:
    """`array` set to write every chunk, including those equal to the fill value."""
    return array.with_config(_ALWAYS_WRITE)


@dataclass(frozen=True)
class LevelArrays:
    """Probabilities and class-id mask of one level, both :func:`writable` and, on object
    storage, read and written by whole shards (:func:`~segflow.tasks.storage.staging.staged`).
    Picklable, for Dask workers."""

    probs: zarr.Array | StagedArray
    mask: zarr.Array | StagedArray


def open_level(out: str | Path, name: str, level: int = 0) -> LevelArrays:
    """The arrays of pyramid `level` of image `name` in the prediction store `out`."""
    return level_arrays(out, open_group(out, name, mode="r+"), level)


def level_arrays(out: str | Path, image: zarr.Group, level: int) -> LevelArrays:
    """:func:`open_level` from the image's group, opened already."""
    probs, mask = (image[path] for path in (str(level), f"labels/mask/{level}"))
    return LevelArrays(staged(writable(probs), out), staged(writable(mask), out))
