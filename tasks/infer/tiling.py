"""Tiled prediction of one region of an image: the pure core of Dask-parallel inference.

A predictor maps a batch of equally sized tiles ``(B, C, h, w)`` to probabilities
``(B, K, h, w)``. Tiles sit on a *global* grid that depends only on the image size, never on
how the work is split into regions, so the result does not depend on chunking or on the number
of workers. Pixels outside the image are mirrored (symmetric padding), as in the U-Net paper.

Two blending modes:

- ``overlap-tile`` (the U-Net paper's): the image is cut into output tiles of ``tile`` pixels
  (:func:`segflow.tasks.storage.grid.pieces`: the last tile of an axis absorbs a remainder
  shorter than half a tile, so no thin edge tile pays a full margin); each is predicted from a
  window with ``margin`` pixels of context on every side and keeps only its own pixels. Every
  pixel is predicted once, at a cost of ``((tile + 2 margin) / tile)²`` of a plain pass.
- ``gaussian`` (nnU-Net, MONAI): ``tile``-sized windows every ``tile * (1 - overlap)`` pixels
  over the image widened by ``margin`` mirrored pixels, the last window shifted back inside,
  averaged with a Gaussian importance map (sigma = tile / 8) that trusts window centres more
  than their borders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import Literal, NamedTuple

import numpy as np

from segflow.tasks.storage.grid import pieces

Blend = Literal["overlap-tile", "gaussian"]


Predictor = Callable[[np.ndarray], np.ndarray]


Reader = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class Tiling:
    """Tile geometry: `tile` and `margin` in pixels, `overlap` a fraction (gaussian only).

    Raises
    ------
    ValueError
        Non-positive tile, negative margin, overlap outside ``[0, 1)`` or unknown blend.
    """

    tile: int
    blend: Blend
    margin: int
    overlap: float

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"tile must be positive, got {self.tile}")
        if self.blend not in ("overlap-tile", "gaussian"):
            raise ValueError(f"blend must be 'overlap-tile' or 'gaussian', got {self.blend!r}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")


class Span(NamedTuple):
    """One tile along one axis: the pixels it writes and the window it reads."""

    out_start: int
    out_stop: int
    win_start: int
    win_stop: int


Window = tuple[Span, Span]  # (row, column) of one tile


def spans(length: int, tiling: Tiling) -> list[Span]:
    """The tiles along an axis of `length` pixels."""
    t = tiling.tile
    if tiling.blend == "overlap-tile":
        m = tiling.margin
        return [Span(a, b, a - m, b + m) for a, b in pieces(length, t)]
    lo, hi = -tiling.margin, length + tiling.margin  # mirrored context at the image edges
    if hi - lo <= t:  # one window, mirrored past the image
        return [Span(0, length, lo, lo + t)]
    stride = max(1, round(t * (1.0 - tiling.overlap)))
    starts = list(range(lo, hi - t, stride)) + [hi - t]
    return [Span(max(a, 0), min(a + t, length), a, a + t) for a in starts]


@lru_cache(maxsize=8)
def gaussian_weights(tile: int) -> np.ndarray:
    """``(tile, tile)`` float32 importance map, sigma = tile / 8, minimum kept above zero."""
    coords = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    g = np.exp(-(coords**2) / (2 * (tile / 8) ** 2))
    weights = np.outer(g, g)
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)  # borders still count a little


def read_mirrored(
    read: Reader, shape: tuple[int, int], y: int, x: int, h: int, w: int
) -> np.ndarray:
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


def _overlapping(all_spans: list[Span], lo: int, hi: int) -> list[Span]:
    return [s for s in all_spans if s.out_start < hi and s.out_stop > lo]


def batches(rows: list[Span], cols: list[Span], batch: int) -> Iterator[list[Window]]:
    """The tiles ``rows x cols`` in groups of at most `batch`, each group of one window size
    (a predictor takes equally sized tiles; only the last tile of an axis differs)."""
    by_size: dict[tuple[int, int], list[Window]] = defaultdict(list)
    for row, col in product(rows, cols):
        by_size[(row.win_stop - row.win_start, col.win_stop - col.win_start)].append((row, col))
    for windows in by_size.values():
        for first in range(0, len(windows), batch):
            yield windows[first : first + batch]


def cut_tiles(pixels: np.ndarray, windows: list[Window], top: int, left: int) -> np.ndarray:
    """``(B, C, h, w)``: the `windows` of `pixels`, a ``(C, H', W')`` crop whose first pixel is
    the image's pixel (top, left)."""
    return np.stack(
        [
            pixels[:, r.win_start - top : r.win_stop - top, c.win_start - left : c.win_stop - left]
            for r, c in windows
        ]
    )


def stitch(
    out: np.ndarray,
    weight: np.ndarray,
    prob: np.ndarray,
    window: Window,
    region: tuple[int, int, int, int],
    tiling: Tiling,
) -> None:
    """Add one tile's ``(K, h, w)`` probabilities, where it writes inside `region`, to the
    region's ``(K, H, W)`` `out` and ``(H, W)`` `weight`: copied with weight 1 (overlap-tile) or
    weighted by :func:`gaussian_weights` and summed (gaussian)."""
    row, col = window
    y0, y1, x0, x1 = region
    a0, a1 = max(row.out_start, y0), min(row.out_stop, y1)
    b0, b1 = max(col.out_start, x0), min(col.out_stop, x1)
    source = (
        slice(a0 - row.win_start, a1 - row.win_start),
        slice(b0 - col.win_start, b1 - col.win_start),
    )
    target = (slice(a0 - y0, a1 - y0), slice(b0 - x0, b1 - x0))
    part = prob[(slice(None), *source)]
    if tiling.blend == "overlap-tile":
        out[(slice(None), *target)] = part
        weight[target] = 1.0
    else:
        w = gaussian_weights(tiling.tile)[source]
        out[(slice(None), *target)] += part * w
        weight[target] += w


def predict_region(
    read: Reader,
    shape: tuple[int, int],
    region: tuple[int, int, int, int],
    predictor: Predictor,
    tiling: Tiling,
    *,
    batch: int,
) -> np.ndarray:
    """Probabilities of the output pixels ``region = (y0, y1, x0, x1)`` of an (H, W) image.

    The input the region's tiles need (the region plus their context) is read once, then
    predicted `batch` tiles per call of `predictor`.

    Parameters
    ----------
    read
        ``read(y0, y1, x0, x1) -> (C, y1 - y0, x1 - x0)`` pixels of the input (any dtype).
    predictor
        ``(B, C, h, w) -> (B, K, h, w)`` float probabilities.

    Returns
    -------
    numpy.ndarray
        ``(K, y1 - y0, x1 - x0)`` float32.
    """
    y0, y1, x0, x1 = region
    rows = _overlapping(spans(shape[0], tiling), y0, y1)
    cols = _overlapping(spans(shape[1], tiling), x0, x1)
    top, left = rows[0].win_start, cols[0].win_start
    pixels = read_mirrored(
        read, shape, top, left, rows[-1].win_stop - top, cols[-1].win_stop - left
    )
    out = weight = None
    for windows in batches(rows, cols, batch):
        probs = np.asarray(predictor(cut_tiles(pixels, windows, top, left)), dtype=np.float32)
        if out is None:  # the class count is known from the first prediction
            out = np.zeros((probs.shape[1], y1 - y0, x1 - x0), dtype=np.float32)
            weight = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        for window, prob in zip(windows, probs, strict=True):
            stitch(out, weight, prob, window, region, tiling)
    return out / weight
