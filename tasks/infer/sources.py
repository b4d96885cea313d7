"""Inference inputs as lazily read ``(C, H, W)`` images, described by picklable specs.

A :class:`Source` names one image and how to open it; Dask workers open it themselves, so no
pixels travel through the scheduler and no image is ever loaded whole (PNG/JPEG excepted:
those formats cannot be read by region, and are decoded once per worker).
"""

from __future__ import annotations

import glob
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
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    InputError,
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
    return read_image(probe_image(path, max_pixels=2**34))


class _Lift:
    """A 2-D Zarr array seen as (1, H, W)."""

    def __init__(self, array) -> None:
        self.array = array

    def __getitem__(self, index):
        return self.array[index[1:]][None]


def _tiff_source(path: Path) -> Source:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
    if axes == "YX":
        chw = (1, *shape)
    elif axes == "YXS":
        chw = (shape[2], shape[0], shape[1])
    else:
        raise InputError(path, f"unsupported TIFF layout axes={axes!r} for inference")
    return Source(path.stem, "tiff", str(path), shape=chw, dtype=str(series.dtype))


def _file_source(path: Path) -> Source:
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _tiff_source(path)
    info = probe_image(path, max_pixels=2**34)
    shape = (info.channels, info.height, info.width)
    return Source(path.stem, "image", str(path), shape=shape, dtype=str(info.dtype))


def find_sources(
    spec: str, *, split: str | None = None
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Inputs named by `spec`: a segflow dataset store (optionally one `split`), a Zarr array,
    a (Big)TIFF, a PNG/JPEG, a folder or a glob of images.

    Returns
    -------
    sources, rejected
        The images found, and (path, reason) for every file that could not be opened.

    Raises
    ------
    FileNotFoundError
        Nothing matches `spec`.
    """
    path = Path(spec)
    if (path / "zarr.json").exists():
        root = zarr.open(path, mode="r")
        if isinstance(root, zarr.Group) and "segflow" in root.attrs:
            dataset = open_dataset(path)
            return [
                Source(
                    s,
                    "store",
                    str(path),
                    s,
                    tuple(dataset.image(s).shape),
                    str(dataset.image(s).dtype),
                )
                for s in dataset.samples(split)
            ], []
        if isinstance(root, zarr.Array) and root.ndim in (2, 3):
            shape = tuple(root.shape) if root.ndim == 3 else (1, *root.shape)
            return [
                Source(
                    path.name.removesuffix(".zarr"), "zarr", str(path), "", shape, str(root.dtype)
                )
            ], []
        raise ValueError(f"{spec}: a Zarr group that is not a segflow dataset store")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"{spec}: no images found (store, Zarr array, TIFF, PNG/JPEG, folder or glob)"
        )
    sources, rejected = [], []
    for file in files:
        try:
            sources.append(_file_source(file))
        except InputError as exc:
            rejected.append((exc.path, exc.problem))
    return sources, rejected
