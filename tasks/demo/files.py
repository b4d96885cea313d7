"""Generated images on disk: PNG, JPEG and (tiled Big)TIFF files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

IMAGE_FORMATS = ("png", "tif", "jpg")


def check_format(image_format: str, dtype: str, channels: int) -> None:
    """Refuse an image format that cannot hold `dtype` pixels with `channels`.

    Raises
    ------
    ValueError
        An unknown format, JPEG with uint16 or alpha, or a 16-bit colour PNG.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format!r} not supported (allowed: {IMAGE_FORMATS})")
    if image_format == "jpg" and (dtype != "uint8" or channels == 4):
        raise ValueError(
            f"image_format='jpg' needs dtype='uint8' and channels 1 or 3 "
            f"(got dtype={dtype!r}, channels={channels}); use 'png' or 'tif'"
        )
    if image_format == "png" and dtype == "uint16" and channels > 1:
        # Pillow, which reads PNGs for ingest, silently drops 16-bit colour PNGs to 8 bit.
        raise ValueError(
            f"image_format='png' with dtype='uint16' needs channels=1 (got {channels}); use 'tif'"
        )


def tiff_layout(channels: int) -> dict:
    """tifffile's photometric options for grey, RGB or RGBA (unassociated alpha) pixels."""
    if channels == 1:
        return {"photometric": "minisblack"}
    if channels == 3:
        return {"photometric": "rgb"}
    return {"photometric": "rgb", "extrasamples": ("unassalpha",)}


def save_image(path: Path, image: np.ndarray, image_format: str) -> None:
    """Write an ``(H, W)`` or ``(H, W, C)`` image as zlib TIFF, JPEG (quality 92) or PNG."""
    if image_format == "tif":
        tifffile.imwrite(
            path,
            image,
            compression="zlib",
            **tiff_layout(1 if image.ndim == 2 else image.shape[-1]),
        )
    elif image_format == "jpg":
        Image.fromarray(image).save(path, format="JPEG", quality=92)
    else:
        Image.fromarray(image).save(path, format="PNG")


def write_tiled(
    path: Path,
    tiles: Iterator[np.ndarray],
    shape: tuple[int, ...],
    dtype: str,
    tile: int,
    layout: dict,
) -> None:
    """Stream `tiles` (row-major, `tile` x `tile` each) into a zlib-compressed tiled BigTIFF."""
    # A bounded buffer keeps tifffile's threaded encoder from queueing many tiles in memory.
    tile_bytes = tile * tile * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            data=tiles,
            shape=shape,
            dtype=dtype,
            tile=(tile, tile),
            compression="zlib",
            maxworkers=2,
            buffersize=2 * tile_bytes,
            **layout,
        )
