"""Tiled prediction of one region of an image: the pure core of Dask-parallel inference.

A predictor maps a batch of tiles ``(B, C, t, t)`` to probabilities ``(B, K, t, t)``. The image
is cut into tiles on a *global* grid (anchored at pixel 0, independent of how the work is split
into blocks), so the result does not depend on chunking or on the number of workers.

Two blending modes:

- ``overlap-tile`` (the U-Net paper's): tiles advance by ``stride = tile - 2 * margin``; each
  keeps only its centre ``stride x stride``, the margin serving as context. Every output pixel is
  predicted exactly once. Costs ``(tile / stride)²`` of the non-overlapping forward passes.
- ``gaussian`` (nnU-Net, MONAI): tiles advance by ``stride = tile * (1 - overlap)`` and
  overlapping predictions are averaged with a Gaussian importance map (sigma = tile / 8) that
  trusts tile centres more than their borders.

Pixels outside the image are mirrored (symmetric padding), as in the U-Net paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

Blend = Literal["overlap-tile", "gaussian"]
Predictor = Callable[[np.ndarray], np.ndarray]
Reader = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class Tiling:
    """Tile geometry: tiles of `tile` pixels placed every `stride` pixels from `offset`."""

    tile: int
    stride: int
    blend: Blend

    @property
    def offset(self) -> int:
        """Tile k covers ``[k * stride - offset, k * stride - offset + tile)``."""
        return (self.tile - self.stride) // 2


def make_tiling(
    tile: int, *, blend: Blend = "overlap-tile", margin: int = 16, overlap: float = 0.25
) -> Tiling:
    """Tiling for `blend`: `margin` pixels of context (overlap-tile) or an `overlap` fraction.

    Raises
    ------
    ValueError
        Non-positive tile, margin leaving no centre, or overlap outside ``[0, 1)``.
    """
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    if blend == "overlap-tile":
        if not 0 <= 2 * margin < tile:
            raise ValueError(f"margin must be in [0, tile/2), got {margin} for tile {tile}")
        return Tiling(tile, tile - 2 * margin, blend)
    if blend == "gaussian":
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        return Tiling(tile, max(1, round(tile * (1.0 - overlap))), blend)
    raise ValueError(f"blend must be 'overlap-tile' or 'gaussian', got {blend!r}")


@lru_cache(maxsize=8)
def gaussian_weights(tile: int) -> np.ndarray:
    """``(tile, tile)`` float32 importance map, sigma = tile / 8, minimum kept above zero."""
    coords = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    g = np.exp(-(coords**2) / (2 * (tile / 8) ** 2))
    weights = np.outer(g, g)
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)  # borders still count a little


def tiles_for(lo: int, hi: int, tiling: Tiling) -> range:
    """Indices k of the tiles that write output pixels in ``[lo, hi)`` along one axis."""
    if tiling.blend == "overlap-tile":  # tile k writes [k * stride, (k + 1) * stride)
        return range(lo // tiling.stride, math.ceil(hi / tiling.stride))
    first = math.ceil((lo + tiling.offset - tiling.tile + 1) / tiling.stride)
    last = math.floor((hi - 1 + tiling.offset) / tiling.stride)
    return range(first, last + 1)


def read_mirrored(read: Reader, shape: tuple[int, int], y: int, x: int, h: int, w: int):
    """The ``(C, h, w)`` window at (y, x) of an (H, W) image, mirrored where it leaves the image.

    `read` is ``read(y0, y1, x0, x1) -> (C, y1 - y0, x1 - x0)``.
    """
    height, width = shape
    y0, y1 = max(0, y), min(height, y + h)
    x0, x1 = max(0, x), min(width, x + w)
    block = read(y0, y1, x0, x1)
    pad = ((0, 0), (y0 - y, y + h - y1), (x0 - x, x + w - x1))
    if any(p for pair in pad for p in pair):
        block = np.pad(block, pad, mode="symmetric")  # repeats mirrors past the image size
    return block


def predict_region(
    read: Reader,
    shape: tuple[int, int],
    region: tuple[int, int, int, int],
    predictor: Predictor,
    tiling: Tiling,
    *,
    batch: int = 4,
) -> np.ndarray:
    """Probabilities of the output pixels ``region = (y0, y1, x0, x1)`` of an (H, W) image.

    Parameters
    ----------
    read
        ``read(y0, y1, x0, x1) -> (C, y1 - y0, x1 - x0)`` pixels of the input (any dtype).
    predictor
        ``(B, C, tile, tile) -> (B, K, tile, tile)`` float probabilities.

    Returns
    -------
    numpy.ndarray
        ``(K, y1 - y0, x1 - x0)`` float32.
    """
    y0, y1, x0, x1 = region
    t, s, o = tiling.tile, tiling.stride, tiling.offset
    starts = [
        (ky * s - o, kx * s - o)
        for ky in tiles_for(y0, y1, tiling)
        for kx in tiles_for(x0, x1, tiling)
    ]
    out = weight = None
    gauss = gaussian_weights(t) if tiling.blend == "gaussian" else None
    for first in range(0, len(starts), batch):
        chunk = starts[first : first + batch]
        tiles = np.stack([read_mirrored(read, shape, ty, tx, t, t) for ty, tx in chunk])
        probs = np.asarray(predictor(tiles), dtype=np.float32)
        if out is None:
            out = np.zeros((probs.shape[1], y1 - y0, x1 - x0), dtype=np.float32)
            weight = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        for (ty, tx), prob in zip(chunk, probs, strict=True):
            if tiling.blend == "overlap-tile":  # keep the centre stride x stride only
                cy, cx = ty + o, tx + o
                prob, tw = prob[:, o : o + s, o : o + s], None
                ty, tx, size = cy, cx, s
            else:
                tw, size = gauss, t
            # intersect the tile's output window with the region
            a0, a1 = max(ty, y0), min(ty + size, y1)
            b0, b1 = max(tx, x0), min(tx + size, x1)
            if a0 >= a1 or b0 >= b1:
                continue
            part = prob[:, a0 - ty : a1 - ty, b0 - tx : b1 - tx]
            if tw is None:
                out[:, a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = part
                weight[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = 1.0
            else:
                w = tw[a0 - ty : a1 - ty, b0 - tx : b1 - tx]
                out[:, a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] += part * w
                weight[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] += w
    return out / weight
