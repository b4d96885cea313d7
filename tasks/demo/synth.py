"""Seeded synthetic image/mask pairs that look like a real segmentation problem.

Backgrounds are smooth multi-scale texture under an illumination gradient with signal-dependent
noise; the foreground mixes blob-like objects with thin, branching curvilinear structures drawn
slightly brighter or darker than their surroundings, so a single threshold is good but not
perfect. Everything is a pure function of the seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage
from skimage import draw
from skimage.morphology import disk

Rng = np.random.Generator


Point = tuple[float, float]


Grids = list[tuple[int, float, np.ndarray]]  # (cell size px, weight, coarse noise)


Plan = list[tuple[int, str, float]]  # (label, kind, share of the foreground budget)


CHANNELS = (1, 3, 4)


DTYPES = ("uint8", "uint16")


IMAGE_FORMATS = ("png", "tif", "jpg")


# Texture octaves as fractions of the object scale, with their weights.
_OCTAVES = ((1 / 4, 0.55), (1 / 16, 0.3), (1 / 64, 0.15))


# Padding (in coarse cells) around each noise grid so cubic interpolation never reads outside.
_GRID_PAD = 4


# Std of cubic-B-spline-interpolated unit white noise (mean over sub-cell offsets), per axis.
_BSPLINE_STD = 0.4794


# Pixels rendered around a large-image tile so the edge blur sees its neighbours.
_HALO = 4


# Class intensity relative to the image contrast: 1 bright blobs, 2 dark curves, 3 bright dots.
_CLASS_SIGN = (1.0, -0.9, 1.5)


_CLASS_KIND = ("blob", "curve", "dot")


@dataclass(frozen=True)
class _Look:
    """Appearance parameters drawn once per image."""

    bg_level: float
    texture_amp: float
    grad_amp: float
    grad_angle: float
    vignette: float
    noise_sigma: float
    shot_noise: float
    bg_colour: np.ndarray  # (C,) float32, colour channels only
    class_colour: np.ndarray  # (K, C) float32, signed intensity added by each class
    black: float
    white: float


@dataclass(frozen=True)
class _Shape:
    """One foreground object in global pixel coordinates."""

    label: int
    gain: float
    rows: np.ndarray  # polygon vertices, or stamp centres when radius > 0
    cols: np.ndarray
    radius: int  # 0 for a polygon
    bbox: tuple[int, int, int, int]  # rmin, rmax, cmin, cmax (inclusive)


def _check_common(channels: int, dtype: str, fg_fraction: float) -> None:
    if channels not in CHANNELS:
        raise ValueError(f"channels={channels!r} not supported (allowed: {CHANNELS})")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} not supported (allowed: {DTYPES})")
    if not 0 < fg_fraction < 1:
        raise ValueError(f"fg_fraction={fg_fraction!r} must lie strictly between 0 and 1")


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def _draw_look(rng: np.random.Generator, channels: int, num_classes: int, dtype: str) -> _Look:
    colour_channels = 1 if channels == 1 else 3
    contrast = rng.uniform(0.16, 0.26)
    if colour_channels == 1:
        bg_colour = np.ones(1)
        tints = np.ones((num_classes, 1))
    else:
        # Pinkish stained-tissue background; classes get well separated hues.
        bg_colour = np.array([0.95, 0.72, 0.85]) + rng.uniform(-0.05, 0.05, 3)
        hue0 = rng.uniform(0, 1)
        tints = np.array(
            [colorsys.hsv_to_rgb((hue0 + 0.381966 * k) % 1, 0.75, 1.0) for k in range(num_classes)]
        )
    signs = np.array([0.0] + [_class_sign(k) for k in range(1, num_classes)])
    white = float(rng.uniform(4000, 60000)) if dtype == "uint16" else 255.0
    return _Look(
        bg_level=rng.uniform(0.25, 0.4),
        texture_amp=rng.uniform(0.04, 0.08),
        grad_amp=rng.uniform(0.05, 0.18),
        grad_angle=rng.uniform(0, 2 * math.pi),
        vignette=rng.uniform(0.0, 0.15),
        noise_sigma=rng.uniform(0.02, 0.04),
        shot_noise=rng.uniform(0.02, 0.05),
        bg_colour=bg_colour.astype(np.float32),
        class_colour=(contrast * signs[:, None] * tints).astype(np.float32),
        # uint16 cameras rarely reach zero: a small dark offset keeps that realistic.
        black=white * rng.uniform(0.0, 0.02) if dtype == "uint16" else 0.0,
        white=white,
    )


def _class_sign(label: int) -> float:
    base = _CLASS_SIGN[(label - 1) % 3]
    # Later classes reuse the three kinds at other intensities so they stay separable.
    return base * (1.0 + 0.35 * ((label - 1) // 3))


def _draw_grids(rng: Rng, shape: tuple[int, int], extent: int) -> Grids:
    """Coarse white-noise grids, one per texture octave, covering `shape` pixels."""
    grids = []
    for frac, weight in _OCTAVES:
        scale = max(2, round(extent * frac))
        gshape = tuple(math.ceil(n / scale) + 2 * _GRID_PAD for n in shape)
        grid = rng.standard_normal(gshape, dtype=np.float32)
        grids.append((scale, weight, grid))
    return grids


def _bspline_taps(start: int, n: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline taps from a coarse grid to pixels ``start..start+n-1`` (global coords).

    Returns ``(first grid index (n,) int64, weights (4, n) float32)``. Global coordinates make
    neighbouring tiles agree exactly.
    """
    x = (np.arange(start, start + n) + 0.5) / scale - 0.5 + _GRID_PAD
    i0 = np.floor(x).astype(np.int64)
    t = (x - i0).astype(np.float32)
    weights = np.stack(
        [
            (1 - t) ** 3 / 6,
            (3 * t**3 - 6 * t**2 + 4) / 6,
            (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
            t**3 / 6,
        ]
    )
    return i0 - 1, weights


def _texture(grids: Grids, r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Multi-scale smooth noise with unit-ish std over a window, ``(h, w)`` float32."""
    out = np.zeros((h, w), dtype=np.float32)
    for scale, weight, grid in grids:
        # Gather-and-weight rather than a matrix product: BLAS threading made this slow and
        # could change the last bits (and so the bytes written) between machines.
        ri, rw = _bspline_taps(r0, h, scale)
        ci, cw = _bspline_taps(c0, w, scale)
        cols = slice(ci[0], ci[-1] + 4)
        rows = sum(rw[k][:, None] * grid[ri + k, cols] for k in range(4))
        ci = ci - ci[0]
        out += (weight / _BSPLINE_STD**2) * sum(cw[k] * rows[:, ci + k] for k in range(4))
    return out


def _illumination(
    look: _Look, full: tuple[int, int], r0: int, c0: int, h: int, w: int
) -> np.ndarray:
    """Linear gradient plus vignette over a window, in global coordinates, ``(h, w)``."""
    y = ((np.arange(r0, r0 + h, dtype=np.float32) + 0.5) / full[0] - 0.5)[:, None]
    x = ((np.arange(c0, c0 + w, dtype=np.float32) + 0.5) / full[1] - 0.5)[None, :]
    ramp = look.grad_amp * (y * math.cos(look.grad_angle) + x * math.sin(look.grad_angle))
    return ramp - look.vignette * (y**2 + x**2)


def _blob(rng: Rng, label: int, centre: Point, extent: int, budget: float) -> tuple[_Shape, float]:
    radius = rng.uniform(0.03, 0.08) * extent
    aspect = rng.uniform(0.45, 1.0)
    # Keep the last objects small so the realised fraction lands near the budget.
    radius = max(1.5, min(radius, math.sqrt(max(budget, 8.0) / (math.pi * aspect))))
    theta = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    rad = np.ones_like(theta)
    for k in (2, 3, 5):  # low harmonics turn the ellipse into an irregular cell-like blob
        rad += rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    a, b = radius * rad * np.cos(theta), aspect * radius * rad * np.sin(theta)
    rot = rng.uniform(0, math.pi)
    rows = centre[0] + a * math.sin(rot) + b * math.cos(rot)
    cols = centre[1] + a * math.cos(rot) - b * math.sin(rot)
    bbox = (int(rows.min()) - 1, int(rows.max()) + 1, int(cols.min()) - 1, int(cols.max()) + 1)
    return _Shape(label, rng.uniform(0.7, 1.3), rows, cols, 0, bbox), math.pi * aspect * radius**2


def _walk(rng: Rng, start: Point, angle: float, length: int) -> np.ndarray:
    """A smooth random walk of unit steps: ``(length, 2)`` float row/col points."""
    # Curvature itself random-walks, which gives vessel/crack-like bends rather than jitter.
    curvature = np.cumsum(rng.normal(0, 0.002, length)).clip(-0.025, 0.025)
    angles = angle + np.cumsum(curvature + rng.normal(0, 0.03, length))
    steps = np.stack([np.sin(angles), np.cos(angles)], axis=1)
    return np.asarray(start, dtype=np.float64) + np.cumsum(steps, axis=0)


def _curve(
    rng: Rng, label: int, centre: Point, extent: int, budget: float, parent: _Shape | None
) -> tuple[_Shape, float]:
    if parent is not None and rng.random() < 0.45:
        # Branch off a previous curve, thinner and at an angle, like a vessel tree.
        i = int(rng.integers(len(parent.rows)))
        start = (parent.rows[i], parent.cols[i])
        radius = max(1, parent.radius - 1)
        j = min(i + 1, len(parent.rows) - 1)
        heading = math.atan2(
            parent.rows[j] - parent.rows[max(j - 1, 0)], parent.cols[j] - parent.cols[max(j - 1, 0)]
        )
        angle = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
    else:
        start, angle = centre, rng.uniform(0, 2 * math.pi)
        radius = int(rng.integers(1, 3 if extent < 512 else 4))
    width = 2 * radius + 1
    length = int(rng.uniform(0.3, 0.9) * extent)
    length = max(4, min(length, int(max(budget, 8.0) / width)))
    points = _walk(rng, start, angle, length)
    rows, cols = points[:, 0], points[:, 1]
    bbox = (
        int(rows.min()) - radius - 1,
        int(rows.max()) + radius + 1,
        int(cols.min()) - radius - 1,
        int(cols.max()) + radius + 1,
    )
    return _Shape(label, rng.uniform(0.7, 1.3), rows, cols, radius, bbox), float(length * width)


def _dot(rng: Rng, label: int, centre: Point, extent: int) -> tuple[_Shape, float]:
    radius = int(rng.integers(1, 4)) * max(1, extent // 512)
    rows, cols = np.array([float(centre[0])]), np.array([float(centre[1])])
    r0, c0 = int(centre[0]), int(centre[1])
    bbox = (r0 - radius - 1, r0 + radius + 1, c0 - radius - 1, c0 + radius + 1)
    area = float(_disk_offsets(radius).shape[1])
    return _Shape(label, rng.uniform(0.8, 1.2), rows, cols, radius, bbox), area


def _class_plan(rng: Rng, num_classes: int) -> Plan:
    """``(label, kind, share of the foreground budget)`` for every group of objects."""
    if num_classes == 2:
        curve_share = rng.uniform(0.3, 0.5)
        return [(1, "blob", 1 - curve_share), (1, "curve", curve_share)]
    share = 1.0 / (num_classes - 1)
    return [(k, _CLASS_KIND[(k - 1) % 3], share) for k in range(1, num_classes)]


def _make_shapes(
    rng: Rng, plan: Plan, budget: float, origin: Point, span: Point, extent: int
) -> list[_Shape]:
    """Objects centred in ``origin + [0, span)`` until their estimated area reaches `budget`.

    Every group in `plan` gets at least one object so that every class appears.
    """
    shapes: list[_Shape] = []
    for label, kind, share in plan:
        left = share * budget
        parent = None
        while True:
            centre = (origin[0] + rng.uniform(0, span[0]), origin[1] + rng.uniform(0, span[1]))
            if kind == "blob":
                shape, area = _blob(rng, label, centre, extent, left)
            elif kind == "curve":
                shape, area = _curve(rng, label, centre, extent, left, parent)
                parent = shape
            else:
                shape, area = _dot(rng, label, centre, extent)
            shapes.append(shape)
            left -= area
            if left <= 0:
                break
    return shapes


@lru_cache(maxsize=16)
def _disk_offsets(radius: int) -> np.ndarray:
    """Row/col offsets of a digital disk, ``(2, n)`` int64."""
    return np.stack(np.nonzero(disk(radius))) - radius


def _rasterize(shape: _Shape, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of `shape` inside the window, relative to it."""
    if shape.radius == 0:
        return draw.polygon(shape.rows - r0, shape.cols - c0, shape=(h, w))
    centres = np.stack([np.rint(shape.rows), np.rint(shape.cols)]).astype(np.int64)
    offsets = _disk_offsets(shape.radius)
    rr = (centres[0][:, None] + offsets[0][None, :]).ravel() - r0
    cc = (centres[1][:, None] + offsets[1][None, :]).ravel() - c0
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    return rr[inside], cc[inside]


def _paint(
    shapes: Sequence[_Shape],
    mask: np.ndarray,
    signal: np.ndarray | None,
    look: _Look,
    r0: int,
    c0: int,
) -> None:
    """Paint shapes into the window ``mask`` (and ``signal``) at global origin ``(r0, c0)``.

    Earlier shapes win where they overlap, so any window sees the same global result.
    """
    h, w = mask.shape
    for shape in shapes:
        rmin, rmax, cmin, cmax = shape.bbox
        if rmax < r0 or rmin >= r0 + h or cmax < c0 or cmin >= c0 + w:
            continue
        rr, cc = _rasterize(shape, r0, c0, h, w)
        free = mask[rr, cc] == 0
        rr, cc = rr[free], cc[free]
        mask[rr, cc] = shape.label
        if signal is not None:
            signal[rr, cc] = shape.gain * look.class_colour[shape.label]


def _compose(
    look: _Look,
    grids: Grids,
    full: tuple[int, int],
    signal: np.ndarray,
    rng: Rng,
    r0: int,
    c0: int,
) -> np.ndarray:
    """Float image of a window, roughly in [0, 1], ``(h, w, C)`` with C the colour channels."""
    h, w, _ = signal.shape
    background = (
        look.bg_level
        + look.texture_amp * _texture(grids, r0, c0, h, w)
        + _illumination(look, full, r0, c0, h, w)
    )
    # Partial-volume blur softens edges; fine texture makes objects non-uniform inside.
    signal = ndimage.gaussian_filter(signal, sigma=(0.8, 0.8, 0), mode="nearest")
    inner = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 1.5)
    signal *= (1 + 1.2 * inner)[..., None]
    image = background[..., None] * look.bg_colour + signal
    sigma = look.noise_sigma + look.shot_noise * np.sqrt(np.clip(image, 0, None))
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return image


def _to_dtype(image: np.ndarray, look: _Look, channels: int, dtype: str) -> np.ndarray:
    """Quantise a float window to `dtype`, adding an opaque alpha channel for RGBA."""
    scaled = look.black + np.clip(image, 0, 1) * (look.white - look.black)
    out = np.rint(scaled).astype(dtype)
    if channels == 4:
        alpha = np.full(out.shape[:2] + (1,), np.iinfo(out.dtype).max, dtype=out.dtype)
        out = np.concatenate([out, alpha], axis=-1)
    return out[..., 0] if channels == 1 else out


def synth_pair(
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    channels: int = 1,
    dtype: str = "uint8",
    fg_fraction: float = 0.08,
    num_classes: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its mask.

    The realised foreground fraction is `fg_fraction` jittered by up to +-25 % per image (more
    when every class of a many-class mask needs at least one object).

    Parameters
    ----------
    rng
        Source of all randomness; the same generator state gives the same pair.
    channels
        1 (grey), 3 (RGB, foreground tinted per class) or 4 (RGB plus opaque alpha).
    dtype
        ``"uint8"`` (0..255) or ``"uint16"`` (white level drawn between 4000 and 60000).
    num_classes
        2 gives a binary mask (blobs and curves both class 1); more gives class 1 blobs,
        class 2 dark curves, class 3 bright dots, then the kinds repeat at other intensities.

    Returns
    -------
    image
        ``(H, W)`` if ``channels == 1`` else ``(H, W, C)``, of `dtype`.
    mask
        ``(H, W)`` uint8 class ids ``0..num_classes-1`` (0 = background).

    Raises
    ------
    ValueError
        Non-positive size, unsupported channels/dtype, fg_fraction outside (0, 1) or
        num_classes outside 2..255.
    """
    _check_positive(height=height, width=width)
    _check_common(channels, dtype, fg_fraction)
    if not 2 <= num_classes <= 255:
        raise ValueError(f"num_classes={num_classes!r} must lie in 2..255")
    extent = min(height, width)
    look = _draw_look(rng, channels, num_classes, dtype)
    grids = _draw_grids(rng, (height, width), extent)
    plan = _class_plan(rng, num_classes)
    mask = np.zeros((height, width), dtype=np.uint8)
    signal = np.zeros((height, width, look.bg_colour.size), dtype=np.float32)
    budget = fg_fraction * height * width * rng.uniform(0.75, 1.25)
    painted = 0
    # Overlaps and borders eat into the estimated areas; top up a few rounds to hit the budget.
    for _ in range(6):
        shapes = _make_shapes(rng, plan, budget - painted, (0, 0), (height, width), extent)
        _paint(shapes, mask, signal, look, 0, 0)
        painted = np.count_nonzero(mask)
        if painted >= 0.93 * budget:
            break
    image = _compose(look, grids, (height, width), signal, rng, 0, 0)
    return _to_dtype(image, look, channels, dtype), mask


def _check_format(image_format: str, dtype: str, channels: int) -> None:
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


def _tiff_layout(channels: int) -> dict:
    if channels == 1:
        return {"photometric": "minisblack"}
    if channels == 3:
        return {"photometric": "rgb"}
    return {"photometric": "rgb", "extrasamples": ("unassalpha",)}


def _save_image(path: Path, image: np.ndarray, image_format: str) -> None:
    if image_format == "tif":
        tifffile.imwrite(
            path,
            image,
            compression="zlib",
            **_tiff_layout(1 if image.ndim == 2 else image.shape[-1]),
        )
    elif image_format == "jpg":
        Image.fromarray(image).save(path, format="JPEG", quality=92)
    else:
        Image.fromarray(image).save(path, format="PNG")


def write_dataset(
    out_dir: str | Path,
    *,
    count: int = 12,
    size: tuple[int, int] = (256, 256),
    channels: int = 1,
    dtype: str = "uint8",
    fg_fraction: float = 0.08,
    num_classes: int = 2,
    seed: int = 0,
    image_format: str = "png",
) -> list[tuple[Path, Path]]:
    """Write ``images/sample_NNN.<png|tif|jpg>`` and ``masks/sample_NNN.png`` under `out_dir`.

    Sample ``i`` depends only on ``(seed, i)`` and the other arguments, not on `count`.
    Binary masks (``num_classes == 2``) are saved as 0/255, as most real datasets do;
    multi-class masks as class ids ``0..num_classes-1``.

    Parameters
    ----------
    size
        ``(height, width)`` of every sample.
    image_format
        ``"png"``, ``"tif"`` (zlib-compressed) or ``"jpg"`` (uint8 grey or RGB only, lossy).

    Returns
    -------
    list of (image path, mask path)
        In sample order.

    Raises
    ------
    ValueError
        Any argument outside the ranges of :func:`synth_pair`, a non-positive `count`, a
        negative `seed`, an unknown `image_format`, JPEG with uint16 or alpha, or a 16-bit
        colour PNG (Pillow reads those as 8 bit; use ``"tif"``).
    """
    _check_positive(count=count, height=size[0], width=size[1])
    _check_common(channels, dtype, fg_fraction)
    _check_format(image_format, dtype, channels)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(count):
        image, mask = synth_pair(
            np.random.default_rng([seed, i]),
            height=size[0],
            width=size[1],
            channels=channels,
            dtype=dtype,
            fg_fraction=fg_fraction,
            num_classes=num_classes,
        )
        image_path = out_dir / "images" / f"sample_{i:03d}.{image_format}"
        mask_path = out_dir / "masks" / f"sample_{i:03d}.png"
        _save_image(image_path, image, image_format)
        Image.fromarray(mask * np.uint8(255) if num_classes == 2 else mask).save(
            mask_path, format="PNG"
        )
        pairs.append((image_path, mask_path))
    return pairs


@dataclass(frozen=True)
class _LargeImage:
    """Everything a tile of the large image needs, drawn once from the seed."""

    seed: int
    size: int
    tile: int
    ntiles: int
    fg_fraction: float
    look: _Look
    grids: Grids
    plan: Plan


def _tile_shapes(big: _LargeImage, ty: int, tx: int) -> list[_Shape]:
    """Objects centred in tile ``(ty, tx)``, from a seed of their own."""
    if not (0 <= ty < big.ntiles and 0 <= tx < big.ntiles):
        return []
    rng = np.random.default_rng([big.seed, ty, tx])
    origin = (ty * big.tile, tx * big.tile)
    span = (min(big.tile, big.size - origin[0]), min(big.tile, big.size - origin[1]))
    # Per-tile density varies like real slides, averaging to the requested fraction.
    budget = big.fg_fraction * span[0] * span[1] * rng.uniform(0.5, 1.5)
    return _make_shapes(rng, big.plan, budget, origin, span, big.tile)


def _neighbour_shapes(
    shapes_of: Callable[[int, int], list[_Shape]], ty: int, tx: int
) -> list[_Shape]:
    # Objects never reach further than one tile from their own, so 3 x 3 tiles cover a window.
    return [s for dy in (-1, 0, 1) for dx in (-1, 0, 1) for s in shapes_of(ty + dy, tx + dx)]


def _large_tiles(
    big: _LargeImage, channels: int, dtype: str, want_mask: bool
) -> Iterator[np.ndarray]:
    """Yield image (or mask) tiles of the large image in row-major order."""
    shapes_of = lru_cache(maxsize=4 * big.ntiles + 8)(lambda ty, tx: _tile_shapes(big, ty, tx))
    full = (big.ntiles * big.tile,) * 2
    t = big.tile
    for ty in range(big.ntiles):
        for tx in range(big.ntiles):
            shapes = _neighbour_shapes(shapes_of, ty, tx)
            if want_mask:
                mask = np.zeros((t, t), dtype=np.uint8)
                _paint(shapes, mask, None, big.look, ty * t, tx * t)
                yield mask * np.uint8(255)
                continue
            r0, c0, n = ty * t - _HALO, tx * t - _HALO, t + 2 * _HALO
            mask = np.zeros((n, n), dtype=np.uint8)
            signal = np.zeros((n, n, big.look.bg_colour.size), dtype=np.float32)
            _paint(shapes, mask, signal, big.look, r0, c0)
            rng = np.random.default_rng([big.seed, ty, tx, 1])
            image = _compose(big.look, big.grids, full, signal, rng, r0, c0)
            yield _to_dtype(image[_HALO:-_HALO, _HALO:-_HALO], big.look, channels, dtype)


def write_large_pair(
    out_dir: str | Path,
    *,
    size: int = 16384,
    tile: int = 1024,
    channels: int = 1,
    dtype: str = "uint8",
    fg_fraction: float = 0.08,
    seed: int = 0,
    name: str = "large",
) -> tuple[Path, Path]:
    """Write a ``size x size`` tiled BigTIFF image and its binary mask, one tile at a time.

    ``images/<name>.tif`` is zlib-compressed with `tile` x `tile` tiles; ``masks/<name>.tif``
    is tiled the same way and holds 0/255. Tiles are generated on demand and streamed to
    tifffile, so peak memory is a few tiles whatever `size` is (peak RSS about 150 MB grey,
    220 MB RGB, with 1024-pixel tiles; 16384 x 16384 grey takes about 40 s on 2 cores).
    Texture and illumination are continuous across tiles and objects cross tile borders;
    foreground density varies from tile to tile around `fg_fraction`.

    Returns
    -------
    (image path, mask path)

    Raises
    ------
    ValueError
        Non-positive `size`, `tile` not a positive multiple of 16 (a TIFF rule), a negative
        `seed`, or `channels`/`dtype`/`fg_fraction` out of range.
    """
    _check_positive(size=size, tile=tile)
    if tile % 16:
        raise ValueError(f"tile={tile!r} must be a multiple of 16 (TIFF tile rule)")
    _check_common(channels, dtype, fg_fraction)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    rng = np.random.default_rng(seed)
    ntiles = math.ceil(size / tile)
    look = _draw_look(rng, channels, 2, dtype)
    grids = _draw_grids(rng, (ntiles * tile, ntiles * tile), tile)
    big = _LargeImage(seed, size, tile, ntiles, fg_fraction, look, grids, _class_plan(rng, 2))
    out_dir = Path(out_dir)
    image_path, mask_path = out_dir / "images" / f"{name}.tif", out_dir / "masks" / f"{name}.tif"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    image_shape = (size, size) if channels == 1 else (size, size, channels)
    _write_tiled(
        image_path,
        _large_tiles(big, channels, dtype, want_mask=False),
        image_shape,
        dtype,
        tile,
        _tiff_layout(channels),
    )
    # The mask is a second, cheap pass over the same per-tile objects: no tile is kept around.
    _write_tiled(
        mask_path,
        _large_tiles(big, channels, dtype, want_mask=True),
        (size, size),
        "uint8",
        tile,
        _tiff_layout(1),
    )
    return image_path, mask_path


def _write_tiled(
    path: Path,
    tiles: Iterator[np.ndarray],
    shape: tuple[int, ...],
    dtype: str,
    tile: int,
    layout: dict,
) -> None:
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
