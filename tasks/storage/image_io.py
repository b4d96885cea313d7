"""Image files: what their headers say, size limits checked before decoding, and decoding.

Files are local paths or URLs (:mod:`segflow.tasks.storage.files`): a remote file's header is
read in small blocks, a tiled TIFF's tiles one by one, so neither is downloaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

import dask.array as da
import numpy as np
import tifffile
import zarr
from PIL import Image

from segflow.tasks.storage import files
from segflow.tasks.storage.files import Location

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})


# Pillow's own decompression-bomb check (an error above ~179 Mpx, a warning above ~89 Mpx)
# would refuse images that `SizeLimits.max_pixels` was raised to accept, with a less clear
# message: segflow checks every header against its own limits before decoding.
Image.MAX_IMAGE_PIXELS = None


# Names segflow's stores keep for themselves: Zarr's metadata file and the prediction store's
# model bundle (tasks/infer/output.py). One rule for sample ids and inference images, so every
# sample of a dataset store can also be predicted into a prediction store.
RESERVED_NAMES = frozenset({"zarr.json", "model"})


TIFF_SUFFIXES = frozenset({".tif", ".tiff"})


# TIFF series layouts we accept, mapped to the transpose that gives (C, H, W).
_TIFF_AXES = {"YX": None, "YXS": (2, 0, 1), "SYX": (0, 1, 2), "CYX": (0, 1, 2)}


_SUPPORTED_DTYPES = frozenset({np.dtype("uint8"), np.dtype("uint16"), np.dtype("bool")})


def looks_like_image(name: str) -> bool:
    """Whether a file name ends in an image suffix (``..png`` and ``.png`` included)."""
    return name.lower().endswith(tuple(IMAGE_SUFFIXES))


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a sample or an image in a segflow store, or None when it can.

    Hidden names (``.x``) would sit beside the stores' own hidden entries (``.staging``), Zarr
    reserves the ``__`` prefix, and :data:`RESERVED_NAMES` are taken; compared case-blind, so
    a store on a case-insensitive filesystem cannot clash either.
    """
    if not name or name.startswith("__"):
        return f"invalid name {name!r} (empty or starting with '__', which Zarr reserves)"
    if name.startswith("."):
        return f"hidden name {name!r} (starts with '.'); rename the file to use it"
    if name.lower() in RESERVED_NAMES:
        taken = ", ".join(sorted(RESERVED_NAMES))
        return f"name {name!r} is reserved in segflow's stores ({taken}); rename the file"
    return None


class InputError(ValueError):
    """A source file that cannot be ingested; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says, read without decoding pixels."""

    path: Location  # a local Path, or a URL
    height: int
    width: int
    channels: int
    dtype: np.dtype
    tiled: bool  # a tiled TIFF: readable region by region (a strip TIFF is decoded whole)

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def is_tiff(self) -> bool:
        return files.suffix_of(self.path).lower() in TIFF_SUFFIXES

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded image: H * W * channels * bytes per sample."""
        return self.pixels * self.channels * self.dtype.itemsize


@dataclass(frozen=True)
class SizeLimits:
    """Largest images accepted, in pixels (H * W), checked on the header before decoding
    (built by ``IngestConfig.size_limits`` and ``InferConfig.size_limits``)."""

    max_pixels: int  # images decoded whole: PNG, JPEG, untiled (strip) TIFF
    max_tiled_pixels: int  # tiled TIFFs, read region by region


def check_size(info: ImageInfo, limits: SizeLimits) -> None:
    """Refuse an image whose header declares more pixels than `limits` allow for its kind.

    Raises
    ------
    InputError
        Naming the file, its declared size, the limit and the option that raises it.
    """
    if info.tiled:
        limit, option, kind = limits.max_tiled_pixels, "max_tiled_pixels", "tiled TIFFs"
    else:
        limit, option = limits.max_pixels, "max_pixels"
        kind = "images decoded whole (PNG, JPEG, untiled TIFF)"
    if info.pixels > limit:
        raise InputError(
            info.path,
            f"declares {info.height}x{info.width} x{info.channels} {info.dtype} "
            f"({info.pixels} pixels, {info.decoded_bytes / 2**20:.0f} MiB decoded), which "
            f"exceeds {option}={limit} for {kind}; raise --{option.replace('_', '-')} "
            "to accept it",
        )


@dataclass(frozen=True)
class ImageFormat:
    """Channels and dtype of an image as stored (bool is stored as uint8)."""

    channels: int
    dtype: str

    @classmethod
    def of(cls, info: ImageInfo) -> ImageFormat:
        dtype = "uint8" if info.dtype == np.dtype("bool") else str(info.dtype)
        return cls(info.channels, dtype)

    def __str__(self) -> str:
        return f"{self.channels} channel{'s' if self.channels > 1 else ''} {self.dtype}"


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (a path or a URL), read in blocks."""
    return files.sha256(files.location(path), block)


def _pil_mode_info(mode: str) -> tuple[int, np.dtype]:
    channels = {
        "1": 1,
        "L": 1,
        "P": 1,
        "I;16": 1,
        "I;16B": 1,
        "I;16L": 1,
        "I": 1,
        "LA": 2,
        "RGB": 3,
        "RGBA": 4,
    }
    if mode not in channels:
        raise ValueError(f"unsupported pixel mode {mode!r}")
    dtype = np.dtype("uint16") if mode.startswith("I") else np.dtype("uint8")
    return channels[mode], dtype


def probe_image(path: str | Path) -> ImageInfo:
    """Read the header: size, channels, dtype and whether it is tiled; no pixel is decoded
    (check the size with :func:`check_size` before decoding).

    Raises
    ------
    InputError
        Unreadable file, unsupported layout or dtype, or zero pixels.
    """
    path = files.location(path)
    tiled = False
    try:
        if files.suffix_of(path).lower() in TIFF_SUFFIXES:
            with (
                files.opened(path, block=files.HEADER_BLOCK) as source,
                tifffile.TiffFile(source) as tif,
            ):
                series = tif.series[0]
                axes, shape, dtype = series.axes, series.shape, np.dtype(series.dtype)
                tiled = bool(series.keyframe.is_tiled)
            if axes not in _TIFF_AXES:
                raise InputError(path, f"unsupported TIFF layout axes={axes!r} shape={shape}")
            if axes == "YX":
                channels, (height, width) = 1, shape
            elif axes == "YXS":
                (height, width, channels) = shape
            else:
                (channels, height, width) = shape
        else:
            with files.opened(path, block=files.HEADER_BLOCK) as source, Image.open(source) as im:
                width, height = im.size
                channels, dtype = _pil_mode_info(im.mode)
    except InputError:
        raise
    except Exception as exc:  # every reader failure is an input problem of this file
        raise InputError(path, f"unreadable image ({type(exc).__name__}: {exc})") from exc
    if dtype not in _SUPPORTED_DTYPES:
        raise InputError(path, f"unsupported dtype {dtype} (supported: uint8, uint16)")
    if height * width == 0:
        raise InputError(path, f"empty image ({height}x{width})")
    if channels not in (1, 2, 3, 4):
        raise InputError(path, f"unsupported channel count {channels}")
    return ImageInfo(path, int(height), int(width), int(channels), dtype, tiled)


def _to_chw(array: np.ndarray, axes: str | None = None) -> np.ndarray:
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.int32:  # Pillow's mode "I" for some 16-bit PNGs
        array = array.astype(np.uint16)
    if array.ndim == 2:
        return array[None]
    if axes in ("SYX", "CYX"):
        return array
    return np.moveaxis(array, -1, 0)


def read_image(info: ImageInfo) -> np.ndarray:
    """Decode the whole image as ``(C, H, W)`` in its source dtype (bool becomes uint8).

    Raises
    ------
    InputError
        Truncated or corrupt data, or a decoded shape that disagrees with the header.
    """
    try:
        if info.is_tiff:
            with files.opened(info.path) as source, tifffile.TiffFile(source) as tif:
                series = tif.series[0]
                array = _to_chw(series.asarray(), series.axes)
        else:
            with files.opened(info.path) as source, Image.open(source) as im:
                im.load()
                # Palette ("P") images give their indices: the class ids of a palette mask.
                array = _to_chw(np.asarray(im))
    except Exception as exc:
        raise InputError(info.path, f"corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    expected = (info.channels, info.height, info.width)
    if array.shape != expected:
        raise InputError(info.path, f"decoded shape {array.shape} differs from header {expected}")
    return array


def tiff_handle(path: Location) -> Path | IO[bytes]:
    """What tifffile reads a TIFF's tiles from: a local file's path (tifffile opens it), or an
    open file of a remote object, fetching each read plus
    :data:`~segflow.tasks.storage.files.HEADER_BLOCK` bytes (``tifffile.imread(...,
    aszarr=True)`` keeps it open and reads from it as tiles are asked for)."""
    return path if isinstance(path, Path) else files.open_remote(path, block=files.HEADER_BLOCK)


def open_lazy(info: ImageInfo, chunks: tuple[int, int]) -> da.Array:
    """A TIFF as a lazy ``(C, H, W)`` Dask array read through tifffile's Zarr interface.

    Chunks are `chunks` in (H, W) and whole along C. Decoding errors surface at compute time.
    A remote TIFF stays open while the array lives and its tiles are fetched as chunks are
    computed, each with at most :data:`~segflow.tasks.storage.files.HEADER_BLOCK` bytes more.
    """
    if not info.is_tiff:
        raise InputError(info.path, "only TIFF files can be read lazily; convert it to tiled TIFF")
    with tifffile.TiffFile(tiff_handle(info.path)) as tif:
        axes = tif.series[0].axes
        tiles = tif.aszarr()  # what tifffile.imread(..., aszarr=True) returns
    array = da.from_zarr(zarr.open_array(tiles, mode="r"))
    if axes == "YX":
        array = array[None]
    elif axes == "YXS":
        array = array.transpose(2, 0, 1)
    return array.rechunk((info.channels, *chunks))
