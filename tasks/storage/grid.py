"""How an image is cut: pieces along an axis, shard-aligned blocks, a plain tile grid."""

from __future__ import annotations


def pieces(length: int, step: int) -> list[tuple[int, int]]:
    """``[start, stop)`` pieces of `step` pixels covering ``[0, length)``; the last piece absorbs
    a remainder shorter than ``step / 2`` (so pieces are ``step // 2`` to ``1.5 step`` long).

    Used for tiles and for blocks alike: when `step` divides the block size, every block
    border is a tile border, so a tile never straddles two blocks.
    """
    starts = list(range(0, length, step))
    if len(starts) > 1 and length - starts[-1] < step / 2:
        starts.pop()
    return list(zip(starts, [*starts[1:], length], strict=True))


def blocks(shape: tuple[int, int], block: int) -> list[tuple[int, int, int, int]]:
    """Shard-aligned regions ``(y0, y1, x0, x1)`` covering an (H, W) image once
    (:func:`segflow.tasks.storage.grid.pieces` along each axis)."""
    return [
        (y0, y1, x0, x1) for y0, y1 in pieces(shape[0], block) for x0, x1 in pieces(shape[1], block)
    ]


def tile_grid(shape: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping tiles covering an (H, W) image."""
    height, width = shape
    return [(y, x) for y in range(0, height, tile) for x in range(0, width, tile)]
