"""Inference inputs as lazily read ``(C, H, W)`` images, described by picklable specs.

A :class:`Source` names one image and how to open it; Dask workers open it themselves, so no
pixels travel through the scheduler and no image is ever loaded whole (PNG/JPEG excepted:
those formats cannot be read by region, and are decoded once per worker).
"""

from __future__ import annotations

import glob
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
import zarr
from zarr.experimental.cache_store import CacheStore
from zarr.storage import MemoryStore

from segflow.tasks.storage.dataset import open_dataset
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
)

Kind = Literal["store", "zarr", "tiff", "image"]


# Decoded TIFF tiles kept per open image: a block's halo reaches into its neighbours' TIFF
# tiles, which without the cache are decoded again (reading with 1024² zlib TIFF tiles, cold:
# HRF 01_h 73 -> 47 ms, 4096² grey 84 -> 44 ms; benchmarks/README.md).
TIFF_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Source:
    """One input image: `kind` and `path` say how to open it, `key` which array inside."""

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


def _version(source: Source) -> int:
    """The file's modification time for single files (a rewritten file is opened afresh,
    not served from the per-process cache of openers and decoded tiles); 0 for stores."""
    return Path(source.path).stat().st_mtime_ns if source.kind in ("tiff", "image") else 0


def forget_opened() -> None:
    """Drop this process's cached openers and decoded TIFF tiles (benchmarks time cold reads,
    as a fresh `segflow infer` process does them)."""
    _open.cache_clear()


@lru_cache(maxsize=4)
def _open(kind: Kind, path: str, key: str, version: int):  # version: part of the cache key
    if kind == "store":
        return open_dataset(path).image(key)
    if kind == "zarr":
        array = zarr.open_array(path, mode="r")
        return array if array.ndim == 3 else _Lift(array)
    if kind == "tiff":
        # tifffile's Zarr store hands out decoded tiles, so caching its values caches decoding.
        tiles = CacheStore(
            tifffile.imread(path, aszarr=True),
            cache_store=MemoryStore(),
            max_size=TIFF_CACHE_BYTES,
        )
        return zarr.open_array(tiles, mode="r")
    return read_image(probe_image(path))  # its size was checked when it was found


class _Lift:
    """A 2-D Zarr array seen as (1, H, W)."""

    def __init__(self, array) -> None:
        self.array = array

    def __getitem__(self, index):
        return self.array[index[1:]][None]


def _tiff_source(path: Path, limits: SizeLimits | None) -> Source:
    with tifffile.TiffFile(path) as tif:
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
    return Source(path.stem, "tiff", str(path), shape=chw, dtype=str(dtype))


def _file_source(path: Path, limits: SizeLimits | None) -> Source:
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _tiff_source(path, limits)
    info = probe_image(path)
    if limits is not None:
        check_size(info, limits)  # PNG/JPEG are decoded whole, once per worker
    shape = (info.channels, info.height, info.width)
    return Source(path.stem, "image", str(path), shape=shape, dtype=str(info.dtype))


def _file_sources(
    files: list[Path], limits: SizeLimits | None
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Sources of image files; a file is rejected for its name (hidden, reserved, or the same
    stem as another input: both named), or when it cannot be opened or is too large."""
    by_name: dict[str, list[Path]] = defaultdict(list)
    for file in files:
        by_name[file.stem].append(file)
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


def _store_sources(path: Path, split: str | None) -> tuple[list[Source], list[tuple[str, str]]]:
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
    a (Big)TIFF, a PNG/JPEG, a folder or a glob of images.

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
    """
    path = Path(spec)
    if (path / "zarr.json").exists():
        root = zarr.open(path, mode="r")
        if isinstance(root, zarr.Group) and "segflow" in root.attrs:
            return _store_sources(path, split)
        if isinstance(root, zarr.Array) and root.ndim in (2, 3):
            name = path.name.removesuffix(".zarr")
            if problem := name_problem(name):
                return [], [(str(path), problem)]
            shape = tuple(root.shape) if root.ndim == 3 else (1, *root.shape)
            return [Source(name, "zarr", str(path), "", shape, str(root.dtype))], []
        raise ValueError(f"{spec}: a Zarr group that is not a segflow dataset store")
    if path.is_dir():
        # Hidden images are listed, and rejected for their name; other hidden files are skipped.
        files = sorted(p for p in path.iterdir() if looks_like_image(p.name) and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec) if looks_like_image(Path(p).name))
    if not files:
        raise FileNotFoundError(
            f"{spec}: no images found (store, Zarr array, TIFF, PNG/JPEG, folder or glob)"
        )
    return _file_sources(files, limits)
