"""Arrays on object storage read and written by whole shard objects, zarr encoding in memory.

zarr 3.1 on an :class:`~zarr.storage.FsspecStore` costs more requests than the objects moved:

- its sharding codec merges every write into what the shard holds, so each shard written is
  first read back (a GET), even in a new array;
- a read that needs only part of a shard (an array's edge shards always: their chunks beyond
  the edge are never asked for) fetches the shard's index, then each inner chunk by a ranged
  GET.

Here zarr still does all the encoding and decoding, on an in-memory array of the same metadata
and configuration (so the objects are byte for byte those it writes in place), and only whole
objects cross the network: one PUT per shard written, one GET per shard read
(benchmarks/README.md, "Object storage"). :func:`staged` wraps an array so where its store is
remote; local arrays are used as they are (a shard read back from disk costs no request).

:class:`WholeObjects` does the read half for a whole store: every ranged read is served from the
whole object, fetched once through the store it wraps (which caches it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.buffer import default_buffer_prototype
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import MemoryStore, WrapperStore

from segflow.tasks.storage import urls

Selection = tuple[int | slice, ...]


def _bytes_to_buffer(data: bytes) -> Buffer:
    return default_buffer_prototype().buffer.from_bytes(data)


class StagedArray:
    """A Zarr array of a remote store whose shards are fetched and sent whole.

    ``staged[sel]`` fetches the shards `sel` touches (one GET each, at once) and decodes
    them in memory; ``staged[sel] = values`` encodes them in memory and sends each touched
    shard as one PUT. Basic selections only (integers and slices).

    A write must cover whole shards (a shard's object is replaced by what the write holds;
    shards at the array's edge end there), as every writer of a prediction store does: a
    block is whole shards that no other writer touches. Picklable (for Dask workers); no
    request is made until it is read or written.
    """

    def __init__(self, array: zarr.Array, location: str) -> None:
        fs, root = urls.filesystem(location)
        self._fs = fs
        self.path = array.path
        self._prefix = f"{root.rstrip('/')}/{array.path}"
        self.metadata = array.metadata
        self.config = array.config
        self._document = array.metadata.to_buffer_dict(default_buffer_prototype())[
            "zarr.json"
        ].to_bytes()

    def __repr__(self) -> str:
        return f"StagedArray({self._prefix!r}, shape={self.shape}, shards={self.shards})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.metadata.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.metadata.data_type.to_native_dtype()

    @property
    def shards(self) -> tuple[int, ...]:
        """The shard shape (the chunk shape, for an array without shards)."""
        return tuple(self.metadata.chunk_grid.chunk_shape)

    def twin(self, objects: dict[str, Buffer]) -> zarr.Array:
        """An in-memory array of this one's metadata and configuration, over `objects` (store
        key -> object; zarr writes the objects it encodes into it)."""
        objects["zarr.json"] = _bytes_to_buffer(self._document)
        return zarr.open_array(MemoryStore(objects), mode="r+", zarr_format=3).with_config(
            self.config
        )

    def shard_keys(self, selection: Selection, *, whole: bool = False) -> list[str]:
        """Keys (relative to the array) of the shards `selection` touches.

        Raises
        ------
        ValueError
            `whole` and `selection` covers part of a shard, or steps.
        TypeError
            `selection` holds something other than integers and slices.
        """
        ranges = []
        for axis, (index, length, side) in enumerate(
            zip(_full(selection, self.ndim), self.shape, self.shards, strict=True)
        ):
            start, stop, step = _bounds(index, length)
            if whole and (step != 1 or start % side or (stop % side and stop != length)):
                raise ValueError(
                    f"{self._prefix}: writing {index} of axis {axis} (length {length}) covers "
                    f"part of a shard of {side}; staged writes replace whole shard objects"
                )
            last = start + (stop - 1 - start) // step * step
            ranges.append(range(start // side, last // side + 1) if stop > start else range(0))
        return [self.metadata.encode_chunk_key(coords) for coords in product(*ranges)]

    def __getitem__(self, selection: Any) -> np.ndarray:
        keys = self.shard_keys(_as_tuple(selection))
        fetched = self._fs.cat([f"{self._prefix}/{key}" for key in keys], on_error="omit")
        objects = {
            key: _bytes_to_buffer(fetched[path])
            for key in keys
            if (path := f"{self._prefix}/{key}") in fetched
        }
        return np.asarray(self.twin(objects)[selection])

    def __setitem__(self, selection: Any, values: Any) -> None:
        keys = self.shard_keys(_as_tuple(selection), whole=True)
        objects: dict[str, Buffer] = {}
        self.twin(objects)[selection] = values
        self._fs.pipe({f"{self._prefix}/{k}": objects[k].to_bytes() for k in keys if k in objects})
        for key in keys:
            if key not in objects:  # all fill value, not kept: zarr deletes it in place too
                self._fs.rm_file(f"{self._prefix}/{key}")


def staged(array: zarr.Array, location: str | Path) -> zarr.Array | StagedArray:
    """`array` (of the store at `location`) read and written by whole shards where that store
    is remote (:class:`StagedArray`); `array` itself where it is local."""
    return StagedArray(array, str(location)) if urls.is_remote(location) else array


def send_documents(location: str | Path, prefix: str, objects: Mapping[str, Buffer]) -> None:
    """Put the objects under `prefix` of `objects` (store key -> object, a hierarchy built
    in memory) into the store at `location`, in place of whatever was under `prefix`;
    ``prefix/zarr.json`` last (on a local disk: written aside and renamed into place), so that
    the node at `prefix` exists only once all below it do, whenever the writer process is
    killed (nothing is fsynced: a power loss is not covered)."""
    fs, root = urls.filesystem(location)
    base = f"{root.rstrip('/')}/{prefix}"
    stale = fs.find(base)
    if stale:
        fs.rm(stale)
    top = f"{prefix}/zarr.json"
    below = {
        f"{root.rstrip('/')}/{key}": value.to_bytes()
        for key, value in objects.items()
        if key.startswith(f"{prefix}/") and key != top
    }
    if urls.is_remote(location):
        fs.pipe(below)
        fs.pipe({f"{base}/zarr.json": objects[top].to_bytes()})  # a PUT is whole or absent
        return
    for path, data in below.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    aside = Path(base) / ".zarr.json.partial"
    aside.parent.mkdir(parents=True, exist_ok=True)
    aside.write_bytes(objects[top].to_bytes())
    os.replace(aside, Path(base) / "zarr.json")


def memory_group(objects: dict[str, Buffer]) -> zarr.Group:
    """A new Zarr v3 root group in memory over `objects` (store key -> object)."""
    return zarr.open_group(MemoryStore(objects), mode="w", zarr_format=3)


def _as_tuple(selection: Any) -> Selection:
    return selection if isinstance(selection, tuple) else (selection,)


def _full(selection: Selection, ndim: int) -> Iterator[int | slice]:
    """`selection` with a full slice for each axis it leaves out."""
    if len(selection) > ndim:
        raise IndexError(f"{len(selection)} indices for an array of {ndim} dimensions")
    yield from selection
    yield from (slice(None),) * (ndim - len(selection))


def _bounds(index: int | slice, length: int) -> tuple[int, int, int]:
    """(start, stop, step) of an integer or a slice along an axis of `length`."""
    if isinstance(index, slice):
        return index.indices(length)
    if isinstance(index, int | np.integer):
        position = int(index) + length if index < 0 else int(index)
        return position, position + 1, 1
    raise TypeError(f"staged arrays take integers and slices, got {index!r}")


class WholeObjects(WrapperStore[Store]):
    """A read-only view of `store` that fetches objects whole: a ranged read (a shard's index,
    an inner chunk) is cut from the whole object, read through `store`, which should cache
    it (:class:`zarr.experimental.cache_store.CacheStore`); else every range fetches it again.

    For readers that use most of every shard they touch (inference reads whole blocks):
    one GET per shard instead of one per inner chunk.
    """

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = await self._store.get(key, prototype)
        if value is None or byte_range is None:
            return value
        size = len(value)
        if isinstance(byte_range, RangeByteRequest):
            start, stop = byte_range.start, byte_range.end
        elif isinstance(byte_range, OffsetByteRequest):
            start, stop = byte_range.offset, size
        elif isinstance(byte_range, SuffixByteRequest):
            start, stop = max(0, size - byte_range.suffix), size
        else:
            raise TypeError(f"unknown byte range {byte_range!r}")
        return value[start:stop]

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]
