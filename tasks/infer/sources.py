"""Inference inputs as lazily read ``(C, H, W)`` images, described by picklable specs.

A :class:`Source` names one image and how to open it; Dask workers open it themselves, so no
pixels travel through the scheduler and no image is ever loaded whole (PNG/JPEG excepted:
those formats cannot be read by region, and are decoded once per worker). Inputs are local
paths or URLs (``s3://b/in/``, ``s3://b/in/*.tif``, ``s3://b/dataset.zarr``); a remote TIFF's
tiles are fetched as regions need them, a remote dataset store's shards whole, once per process
while its cache holds them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import tifffile
import zarr
from zarr.experimental.cache_store import CacheStore
from zarr.storage import MemoryStore

from segflow.tasks.storage import files, urls
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.files import Location
from segflow.tasks.storage.image_io import (
    TIFF_SUFFIXES,
    ImageInfo,
    InputError,
    SizeLimits,
    check_size,
    looks_like_image,
    name_problem,
    probe_image,
    read_image,
    tiff_handle,
)
from segflow.tasks.storage.staging import WholeObjects

Kind = Literal["store", "zarr", "tiff", "image"]


# Decoded TIFF tiles kept per open image: a block's halo reaches into its neighbours' TIFF
# tiles, which without the cache are decoded again (reading with 1024² zlib TIFF tiles, cold:
# HRF 01_h 73 -> 47 ms, 4096² grey 84 -> 44 ms; benchmarks/README.md).
TIFF_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Source:
    """One input image: `kind` and `path` (a local path or a URL) say how to open it, `key`
    which array inside."""

    name: str
    kind: Kind
    path: str
    key: str = ""
    shape: tuple[int, int, int] = (0, 0, 0)
    dtype: str = "uint8"

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """``(C, y1 - y0, x1 - x0)`` pixels, read from storage (cached opener per process)."""
        array = _open(self.kind, self.path, self.key, _version(self))
        if self.kind in ("store", "zarr"):
            return np.asarray(array[:, y0:y1, x0:x1])
        if self.kind == "tiff":
            block = np.asarray(array[y0:y1, x0:x1])
            return block[None] if block.ndim == 2 else np.moveaxis(block, -1, 0)
        return array[:, y0:y1, x0:x1]


def _version(source: Source) -> int | str:
    """The file's modification time (remote: its ETag) for single files (a rewritten file is
    opened afresh, not served from the per-process cache of openers and decoded tiles); 0 for
    stores."""
    if source.kind in ("tiff", "image"):
        return files.version(files.location(source.path))
    return 0


def forget_opened() -> None:
    """Drop this process's cached openers and decoded TIFF tiles (benchmarks time cold reads,
    as a fresh `segflow infer` process does them)."""
    _open.cache_clear()


@lru_cache(maxsize=4)
def _open(kind: Kind, path: str, key: str, version: int | str):  # version: in the cache key
    if kind == "store":
        return _store_image(path, key)
    if kind == "zarr":
        array = zarr.open_array(urls.zarr_store(path, read_only=True), mode="r")
        return array if array.ndim == 3 else _Lift(array)
    if kind == "tiff":
        # tifffile's Zarr store hands out decoded tiles, so caching its values caches decoding.
        tiles = CacheStore(
            tifffile.imread(tiff_handle(files.location(path)), aszarr=True),
            cache_store=MemoryStore(),
            max_size=TIFF_CACHE_BYTES,
        )
        return zarr.open_array(tiles, mode="r")
    return read_image(probe_image(path))  # its size was checked when it was found


def _store_image(path: str, key: str) -> zarr.Array:
    """Image `key` of the dataset store at `path`; on object storage read by whole shards.

    A block reads every inner chunk of most shards it touches and its halo reaches into the
    shards of the next block, so one GET per shard, cached (the store's bounded cache,
    :func:`~segflow.tasks.storage.dataset.open_dataset`), beats a GET per inner chunk (an HRF
    image in 2048² blocks: 76 requests -> 12; benchmarks/README.md, "Object storage").
    """
    dataset = open_dataset(path)
    if not urls.is_remote(path):
        return dataset.image(key)
    root = zarr.open_group(WholeObjects(dataset.root.store), mode="r", zarr_format=3)
    return root[f"images/{key}"]


class _Lift:
    """A 2-D Zarr array seen as (1, H, W)."""

    def __init__(self, array) -> None:
        self.array = array

    def __getitem__(self, index):
        return self.array[index[1:]][None]


def _tiff_source(path: Location, limits: SizeLimits | None) -> Source:
    with files.opened(path, block=files.HEADER_BLOCK) as source, tifffile.TiffFile(source) as tif:
        series = tif.series[0]
        axes, shape, dtype = series.axes, series.shape, np.dtype(series.dtype)
        tiled = bool(series.keyframe.is_tiled)
    if axes == "YX":
        chw = (1, *shape)
    elif axes == "YXS":
        chw = (shape[2], shape[0], shape[1])
    else:
        raise InputError(path, f"unsupported TIFF layout axes={axes!r} for inference")
    if limits is not None:
        # A strip TIFF's regions decode whole strips (a single-strip one: the whole image).
        check_size(ImageInfo(path, chw[1], chw[2], chw[0], dtype, tiled), limits)
    return Source(files.stem_of(path), "tiff", str(path), shape=chw, dtype=str(dtype))


def _file_source(path: Location, limits: SizeLimits | None) -> Source:
    if files.suffix_of(path).lower() in TIFF_SUFFIXES:
        return _tiff_source(path, limits)
    info = probe_image(path)
    if limits is not None:
        check_size(info, limits)  # PNG/JPEG are decoded whole, once per worker
    shape = (info.channels, info.height, info.width)
    return Source(files.stem_of(path), "image", str(path), shape=shape, dtype=str(info.dtype))


def _file_sources(
    found: list[Location], limits: SizeLimits | None
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Sources of image files; a file is rejected for its name (hidden, reserved, or the same
    stem as another input: both named), or when it cannot be opened or is too large."""
    by_name: dict[str, list[Location]] = defaultdict(list)
    for file in found:
        by_name[files.stem_of(file)].append(file)
    sources, rejected = [], []
    for name, paths in sorted(by_name.items()):
        for file in paths:
            others = ", ".join(str(p) for p in paths if p != file)
            problem = name_problem(name) or (
                others and f"duplicate name {name!r}: also the name of {others}; rename one"
            )
            if problem:
                rejected.append((str(file), problem))
                continue
            try:
                sources.append(_file_source(file, limits))
            except InputError as exc:
                rejected.append((exc.path, exc.problem))
    return sources, rejected


def _store_sources(path: Location, split: str | None) -> tuple[list[Source], list[tuple[str, str]]]:
    dataset = open_dataset(path)
    sources, rejected = [], []
    for sample in dataset.samples(split):
        if problem := name_problem(sample):
            rejected.append((f"{path}/images/{sample}", problem))
            continue
        image = dataset.image(sample)
        sources.append(Source(sample, "store", str(path), sample, image.shape, str(image.dtype)))
    return sources, rejected


def find_sources(
    spec: str, *, split: str | None = None, limits: SizeLimits | None = None
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Inputs named by `spec`: a segflow dataset store (optionally one `split`), a Zarr array,
    a (Big)TIFF, a PNG/JPEG, a folder or a glob of images; each a local path or a URL.

    An image's name (its file stem, sample id or array name) names its prediction, so names
    that are hidden, reserved in a prediction store (``model``) or shared by two files are
    refused. Image files larger than `limits` are refused from their headers (None: no limit).

    Returns
    -------
    sources, rejected
        The images found, and (path, reason) for every input refused.

    Raises
    ------
    FileNotFoundError
        Nothing matches `spec`.
    StorageError
        A remote `spec` whose storage does not answer.
    """
    path = files.location(spec)
    if files.exists(files.child(path, "zarr.json")):
        # zarr.json exists: no look for v2 metadata (a request per document on object storage)
        root = zarr.open(urls.zarr_store(path, read_only=True), mode="r", zarr_format=3)
        if isinstance(root, zarr.Group) and "segflow" in root.attrs:
            return _store_sources(path, split)
        if isinstance(root, zarr.Array) and root.ndim in (2, 3):
            name = files.name_of(path).removesuffix(".zarr")
            if problem := name_problem(name):
                return [], [(str(path), problem)]
            shape = tuple(root.shape) if root.ndim == 3 else (1, *root.shape)
            return [Source(name, "zarr", str(path), "", shape, str(root.dtype))], []
        raise ValueError(f"{spec}: a Zarr group that is not a segflow dataset store")
    if files.is_dir(path):
        # Hidden images are listed, and rejected for their name; other hidden files are skipped.
        listed = files.entries(path)
        found = [p for p, folder in listed if looks_like_image(files.name_of(p)) and not folder]
    elif files.is_file(path):
        found = [path]
    else:
        found = [p for p in files.glob(spec) if looks_like_image(files.name_of(p))]
    if not found:
        raise FileNotFoundError(
            f"{spec}: no images found (store, Zarr array, TIFF, PNG/JPEG, folder or glob)"
        )
    return _file_sources(found, limits)
