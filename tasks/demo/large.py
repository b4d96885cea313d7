"""One large tiled BigTIFF image and its binary mask, generated and written tile by tile.

Every tile draws its objects from a seed of its own, so a tile is rendered from its 3 x 3
neighbourhood alone and memory stays at a few tiles whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from segflow.tasks.demo.compose import compose, to_dtype
from segflow.tasks.demo.files import tiff_layout, write_tiled
from segflow.tasks.demo.look import Look, draw_look
from segflow.tasks.demo.shapes import Plan, Shape, class_plan, make_shapes, paint
from segflow.tasks.demo.synth import DEFAULT_SPEC, SynthSpec, check_positive, check_seed
from segflow.tasks.demo.texture import Grids, draw_grids

# Pixels rendered around a tile so the edge blur sees its neighbours.
_HALO = 4


@dataclass(frozen=True)
class _LargeImage:
    """Everything a tile of the large image needs, drawn once from the seed."""

    seed: int
    size: int
    tile: int
    ntiles: int
    spec: SynthSpec
    look: Look
    grids: Grids
    plan: Plan


def _draw_large(seed: int, size: int, tile: int, spec: SynthSpec) -> _LargeImage:
    rng = np.random.default_rng(seed)
    ntiles = math.ceil(size / tile)
    look = draw_look(rng, spec.channels, 2, spec.dtype)
    grids = draw_grids(rng, (ntiles * tile, ntiles * tile), tile)
    return _LargeImage(
        seed, size, tile, ntiles, spec, look, grids, class_plan(rng, 2, spec.objects)
    )


def _tile_shapes(big: _LargeImage, ty: int, tx: int) -> list[Shape]:
    """Objects centred in tile ``(ty, tx)``, from a seed of their own."""
    if not (0 <= ty < big.ntiles and 0 <= tx < big.ntiles):
        return []
    rng = np.random.default_rng([big.seed, ty, tx])
    origin = (ty * big.tile, tx * big.tile)
    span = (min(big.tile, big.size - origin[0]), min(big.tile, big.size - origin[1]))
    # Per-tile density varies like real slides, averaging to the requested fraction.
    budget = big.spec.fg_fraction * span[0] * span[1] * rng.uniform(0.5, 1.5)
    return make_shapes(rng, big.plan, budget, origin, span, big.tile)


def _neighbour_shapes(
    shapes_of: Callable[[int, int], list[Shape]], ty: int, tx: int
) -> list[Shape]:
    # Objects never reach further than one tile from their own, so 3 x 3 tiles cover a window.
    return [s for dy in (-1, 0, 1) for dx in (-1, 0, 1) for s in shapes_of(ty + dy, tx + dx)]


def _mask_tile(big: _LargeImage, shapes: list[Shape], ty: int, tx: int) -> np.ndarray:
    """Tile ``(ty, tx)`` of the mask, ``(tile, tile)`` uint8 0/255."""
    t = big.tile
    mask = np.zeros((t, t), dtype=np.uint8)
    paint(shapes, mask, None, big.look, ty * t, tx * t)
    return mask * np.uint8(255)


def _image_tile(big: _LargeImage, shapes: list[Shape], ty: int, tx: int) -> np.ndarray:
    """Tile ``(ty, tx)`` of the image, rendered with a halo that is cut off again."""
    t = big.tile
    r0, c0, n = ty * t - _HALO, tx * t - _HALO, t + 2 * _HALO
    mask = np.zeros((n, n), dtype=np.uint8)
    signal = np.zeros((n, n, big.look.bg_colour.size), dtype=np.float32)
    paint(shapes, mask, signal, big.look, r0, c0)
    rng = np.random.default_rng([big.seed, ty, tx, 1])
    full = (big.ntiles * t,) * 2
    image = compose(big.look, big.grids, full, signal, rng, r0, c0)
    spec = big.spec
    return to_dtype(image[_HALO:-_HALO, _HALO:-_HALO], big.look, spec.channels, spec.dtype)


def _large_tiles(big: _LargeImage, want_mask: bool) -> Iterator[np.ndarray]:
    """Yield image (or mask) tiles of the large image in row-major order."""
    shapes_of = lru_cache(maxsize=4 * big.ntiles + 8)(lambda ty, tx: _tile_shapes(big, ty, tx))
    render = _mask_tile if want_mask else _image_tile
    for ty in range(big.ntiles):
        for tx in range(big.ntiles):
            yield render(big, _neighbour_shapes(shapes_of, ty, tx), ty, tx)


def write_large_pair(
    out_dir: str | Path,
    *,
    size: int = 16384,
    tile: int = 1024,
    spec: SynthSpec = DEFAULT_SPEC,
    seed: int = 0,
    name: str = "large",
) -> tuple[Path, Path]:
    """Write a ``size x size`` tiled BigTIFF image and its binary mask, one tile at a time.

    ``images/<name>.tif`` is zlib-compressed with `tile` x `tile` tiles; ``masks/<name>.tif``
    is tiled the same way and holds 0/255. Tiles are generated on demand and streamed to
    tifffile, so peak memory is a few tiles whatever `size` is (peak RSS about 150 MB grey,
    220 MB RGB, with 1024-pixel tiles; 16384 x 16384 grey takes about 40 s on 2 cores).
    Texture and illumination are continuous across tiles and objects cross tile borders;
    foreground density varies from tile to tile around ``spec.fg_fraction``.

    Returns
    -------
    (image path, mask path)

    Raises
    ------
    ValueError
        Non-positive `size`, `tile` not a positive multiple of 16 (a TIFF rule), a negative
        `seed`, or ``spec.num_classes`` other than 2.
    """
    check_positive(size=size, tile=tile)
    if tile % 16:
        raise ValueError(f"tile={tile!r} must be a multiple of 16 (TIFF tile rule)")
    if spec.num_classes != 2:
        raise ValueError(f"num_classes={spec.num_classes!r}: the large pair is binary (use 2)")
    check_seed(seed)
    big = _draw_large(seed, size, tile, spec)
    out_dir = Path(out_dir)
    image_path, mask_path = out_dir / "images" / f"{name}.tif", out_dir / "masks" / f"{name}.tif"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if spec.channels == 1 else (size, size, spec.channels)
    layout = tiff_layout(spec.channels)
    write_tiled(image_path, _large_tiles(big, False), shape, spec.dtype, tile, layout)
    # The mask is a second, cheap pass over the same per-tile objects: no tile is kept around.
    write_tiled(mask_path, _large_tiles(big, True), (size, size), "uint8", tile, tiff_layout(1))
    return image_path, mask_path
