"""Seeded synthetic image/mask pairs that look like a real segmentation problem.

Backgrounds are smooth multi-scale texture under an illumination gradient with signal-dependent
noise; the foreground mixes blob-like objects with thin, branching curvilinear structures drawn
slightly brighter or darker than their surroundings, so a single threshold is good but not
perfect. Everything is a pure function of the seed: the same seed gives byte-identical files.
One large tiled image is written by :func:`segflow.tasks.demo.large.write_large_pair`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segflow.tasks.demo.compose import compose, to_dtype
from segflow.tasks.demo.files import check_format, save_image
from segflow.tasks.demo.look import draw_look
from segflow.tasks.demo.shapes import class_plan, make_shapes, paint
from segflow.tasks.demo.texture import draw_grids

CHANNELS = (1, 3, 4)


DTYPES = ("uint8", "uint16")


OBJECTS = ("mixed", "thin", "spots")


@dataclass(frozen=True)
class SynthSpec:
    """What every generated image holds.

    Attributes
    ----------
    channels
        1 (grey), 3 (RGB, foreground tinted per class) or 4 (RGB plus opaque alpha).
    dtype
        ``"uint8"`` (0..255) or ``"uint16"`` (white level drawn between 4000 and 60000).
    fg_fraction
        Target share of foreground pixels, strictly between 0 and 1.
    num_classes
        2 gives a binary mask (blobs and curves both class 1); more gives class 1 blobs,
        class 2 dark curves, class 3 bright dots, then the kinds repeat at other intensities.
    objects
        ``"mixed"`` as above; ``"thin"``: only thin curves (cracks, vessels); ``"spots"``: only
        small blobs of 2-10 px radius, most in clusters (lesions), whatever the image size;
        both with as many look-alikes of half the contrast in the background (not in the mask).
    class_shares
        Share of the foreground of each class 1..K-1 of a multi-class mask (summing to 1);
        None: equal. A small share makes a rare class.

    Raises
    ------
    ValueError
        Unsupported `channels`, `dtype` or `objects`, `fg_fraction` outside (0, 1) or
        `num_classes` outside 2..255.
    """

    channels: int = 1
    dtype: str = "uint8"
    fg_fraction: float = 0.08
    num_classes: int = 2
    objects: str = "mixed"
    class_shares: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(f"channels={self.channels!r} not supported (allowed: {CHANNELS})")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} not supported (allowed: {DTYPES})")
        if self.objects not in OBJECTS:
            raise ValueError(f"objects={self.objects!r} not supported (allowed: {OBJECTS})")
        if not 0 < self.fg_fraction < 1:
            raise ValueError(f"fg_fraction={self.fg_fraction!r} must lie strictly between 0 and 1")
        if not 2 <= self.num_classes <= 255:
            raise ValueError(f"num_classes={self.num_classes!r} must lie in 2..255")
        shares = self.class_shares
        if shares is not None and (
            len(shares) != self.num_classes - 1 or min(shares) <= 0 or abs(sum(shares) - 1) > 1e-6
        ):
            raise ValueError(f"class_shares={shares!r}: one positive share per class, summing to 1")


DEFAULT_SPEC = SynthSpec()


def check_positive(**sizes: int) -> None:
    """Raise ValueError naming the first of `sizes` that is not a positive integer."""
    for name, value in sizes.items():
        if not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def check_seed(seed: int) -> None:
    """Raise ValueError unless `seed` is a non-negative integer."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")


def synth_pair(
    rng: np.random.Generator, *, height: int, width: int, spec: SynthSpec = DEFAULT_SPEC
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its mask.

    The realised foreground fraction is ``spec.fg_fraction`` jittered by up to +-25 % per
    image (more when every class of a many-class mask needs at least one object).

    Parameters
    ----------
    rng
        Source of all randomness; the same generator state gives the same pair.
    height, width
        Size in pixels.
    spec
        Channels, dtype, foreground fraction and classes.

    Returns
    -------
    image
        ``(H, W)`` if ``spec.channels == 1`` else ``(H, W, C)``, of ``spec.dtype``.
    mask
        ``(H, W)`` uint8 class ids ``0..spec.num_classes-1`` (0 = background).

    Raises
    ------
    ValueError
        Non-positive `height` or `width`.
    """
    check_positive(height=height, width=width)
    extent = min(height, width)
    look = draw_look(rng, spec.channels, spec.num_classes, spec.dtype)
    grids = draw_grids(rng, (height, width), extent)
    plan = class_plan(rng, spec.num_classes, spec.objects, spec.class_shares)
    mask = np.zeros((height, width), dtype=np.uint8)
    signal = np.zeros((height, width, look.bg_colour.size), dtype=np.float32)
    budget = spec.fg_fraction * height * width * rng.uniform(0.75, 1.25)
    painted = 0
    # Overlaps and borders eat into the estimated areas; top up a few rounds to hit the budget.
    for _ in range(6):
        shapes = make_shapes(rng, plan, budget - painted, (0, 0), (height, width), extent)
        paint(shapes, mask, signal, look, 0, 0)
        painted = np.count_nonzero(mask)
        if painted >= 0.93 * budget:
            break
    if spec.objects != "mixed":
        _paint_lookalikes(rng, plan, budget, mask, signal, look)
    image = compose(look, grids, (height, width), signal, rng, 0, 0)
    return to_dtype(image, look, spec.channels, spec.dtype), mask


# Look-alikes of the thin or spot objects: as many, drawn at this share of their contrast.
LOOKALIKE_GAIN = 0.5


def _paint_lookalikes(
    rng: np.random.Generator,
    plan: list,
    budget: float,
    mask: np.ndarray,
    signal: np.ndarray,
    look,
) -> None:
    """Paint objects like the foreground's, at lower contrast, into the background's signal
    (not the mask): the confounders that make rare-class data hard (drusen beside exudates,
    joints and shadows beside cracks)."""
    height, width = mask.shape
    shapes = make_shapes(rng, plan, budget, (0, 0), (height, width), min(height, width))
    fake_mask, fake_signal = np.zeros_like(mask), np.zeros_like(signal)
    paint(shapes, fake_mask, fake_signal, look, 0, 0)
    free = (fake_mask > 0) & (mask == 0)
    signal[free] = LOOKALIKE_GAIN * fake_signal[free]


def write_dataset(
    out_dir: str | Path,
    *,
    count: int = 12,
    size: tuple[int, int] = (256, 256),
    spec: SynthSpec = DEFAULT_SPEC,
    seed: int = 0,
    image_format: str = "png",
) -> list[tuple[Path, Path]]:
    """Write ``images/sample_NNN.<png|tif|jpg>`` and ``masks/sample_NNN.png`` under `out_dir`.

    Sample ``i`` depends only on ``(seed, i)``, `size` and `spec`, not on `count`. Binary
    masks (``spec.num_classes == 2``) are saved as 0/255, as most real datasets do;
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
        A non-positive `count` or size, a negative `seed`, an unknown `image_format`, JPEG
        with uint16 or alpha, or a 16-bit colour PNG (Pillow reads those as 8 bit; use
        ``"tif"``).
    """
    check_positive(count=count, height=size[0], width=size[1])
    check_format(image_format, spec.dtype, spec.channels)
    check_seed(seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        image, mask = synth_pair(rng, height=size[0], width=size[1], spec=spec)
        image_path = out_dir / "images" / f"sample_{i:03d}.{image_format}"
        mask_path = out_dir / "masks" / f"sample_{i:03d}.png"
        save_image(image_path, image, image_format)
        save_image(mask_path, mask * np.uint8(255) if spec.num_classes == 2 else mask, "png")
        pairs.append((image_path, mask_path))
    return pairs
