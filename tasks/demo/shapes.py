"""Foreground objects: irregular blobs, thin branching curves and dots, and how to paint them.

Objects live in global pixel coordinates, so any window of an image paints the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from skimage import draw
from skimage.morphology import disk

from segflow.tasks.demo.look import Look

Rng = np.random.Generator


Point = tuple[float, float]


Plan = list[tuple[int, str, float]]  # (label, kind, share of the foreground budget)


_CLASS_KIND = ("blob", "curve", "dot")


@dataclass(frozen=True)
class Shape:
    """One foreground object in global pixel coordinates."""

    label: int
    gain: float
    rows: np.ndarray  # polygon vertices, or stamp centres when radius > 0
    cols: np.ndarray
    radius: int  # 0 for a polygon
    bbox: tuple[int, int, int, int]  # rmin, rmax, cmin, cmax (inclusive)


def _blob(
    rng: Rng, label: int, centre: Point, extent: int, budget: float, radius: float | None = None
) -> tuple[Shape, float]:
    radius = rng.uniform(0.03, 0.08) * extent if radius is None else radius
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
    return Shape(label, rng.uniform(0.7, 1.3), rows, cols, 0, bbox), math.pi * aspect * radius**2


def _walk(rng: Rng, start: Point, angle: float, length: int) -> np.ndarray:
    """A smooth random walk of unit steps: ``(length, 2)`` float row/col points."""
    # Curvature itself random-walks, which gives vessel/crack-like bends rather than jitter.
    curvature = np.cumsum(rng.normal(0, 0.002, length)).clip(-0.025, 0.025)
    angles = angle + np.cumsum(curvature + rng.normal(0, 0.03, length))
    steps = np.stack([np.sin(angles), np.cos(angles)], axis=1)
    return np.asarray(start, dtype=np.float64) + np.cumsum(steps, axis=0)


def _curve(
    rng: Rng, label: int, centre: Point, extent: int, budget: float, parent: Shape | None
) -> tuple[Shape, float]:
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
    return Shape(label, rng.uniform(0.7, 1.3), rows, cols, radius, bbox), float(length * width)


def _spot(rng: Rng, label: int, centre: Point, budget: float) -> tuple[Shape, float]:
    """A small irregular blob of 2-10 px radius (a lesion), whatever the image size."""
    return _blob(rng, label, centre, 1, budget, radius=rng.uniform(2.0, 10.0))


def _dot(rng: Rng, label: int, centre: Point, extent: int) -> tuple[Shape, float]:
    radius = int(rng.integers(1, 4)) * max(1, extent // 512)
    rows, cols = np.array([float(centre[0])]), np.array([float(centre[1])])
    r0, c0 = int(centre[0]), int(centre[1])
    bbox = (r0 - radius - 1, r0 + radius + 1, c0 - radius - 1, c0 + radius + 1)
    area = float(_disk_offsets(radius).shape[1])
    return Shape(label, rng.uniform(0.8, 1.2), rows, cols, radius, bbox), area


def class_plan(
    rng: Rng, num_classes: int, objects: str = "mixed", shares: Sequence[float] | None = None
) -> Plan:
    """``(label, kind, share of the foreground budget)`` for every group of objects.

    Mixed binary masks mix blobs and curves in class 1; more classes get one kind each: class 1
    blobs, class 2 curves, class 3 dots, then the kinds repeat. ``objects="thin"`` or
    ``"spots"`` gives every class curves or small clustered spots. `shares` splits the
    foreground between the classes (default: equally).
    """
    shares = shares or [1.0 / (num_classes - 1)] * (num_classes - 1)
    if objects != "mixed":
        kind = {"thin": "curve", "spots": "spot"}[objects]
        return [(k, kind, shares[k - 1]) for k in range(1, num_classes)]
    if num_classes == 2:
        curve_share = rng.uniform(0.3, 0.5)
        return [(1, "blob", 1 - curve_share), (1, "curve", curve_share)]
    return [(k, _CLASS_KIND[(k - 1) % 3], shares[k - 1]) for k in range(1, num_classes)]


def make_shapes(
    rng: Rng, plan: Plan, budget: float, origin: Point, span: Point, extent: int
) -> list[Shape]:
    """Objects centred in ``origin + [0, span)`` until their estimated area reaches `budget`.

    Every group in `plan` gets at least one object so that every class appears; `extent` is
    the object scale in pixels.
    """
    shapes: list[Shape] = []
    for label, kind, share in plan:
        left = share * budget
        parent = None
        while True:
            centre = (origin[0] + rng.uniform(0, span[0]), origin[1] + rng.uniform(0, span[1]))
            if kind == "spot" and parent is not None and rng.random() < 0.8:
                # Most spots sit near the previous one: lesions come in clusters.
                centre = (
                    parent.rows.mean() + rng.normal(0, 25),
                    parent.cols.mean() + rng.normal(0, 25),
                )
            if kind == "spot":
                shape, area = _spot(rng, label, centre, left)
                parent = shape
            elif kind == "blob":
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


def _rasterize(shape: Shape, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of `shape` inside the window, relative to it."""
    if shape.radius == 0:
        return draw.polygon(shape.rows - r0, shape.cols - c0, shape=(h, w))
    centres = np.stack([np.rint(shape.rows), np.rint(shape.cols)]).astype(np.int64)
    offsets = _disk_offsets(shape.radius)
    rr = (centres[0][:, None] + offsets[0][None, :]).ravel() - r0
    cc = (centres[1][:, None] + offsets[1][None, :]).ravel() - c0
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    return rr[inside], cc[inside]


def paint(
    shapes: Sequence[Shape],
    mask: np.ndarray,
    signal: np.ndarray | None,
    look: Look,
    r0: int,
    c0: int,
) -> None:
    """Paint shapes into the window ``mask`` (and ``signal``) at global origin ``(r0, c0)``.

    `mask` is ``(h, w)`` uint8 class ids and `signal` ``(h, w, C)`` float32 intensity, both
    changed in place. Earlier shapes win where they overlap, so any window sees the same
    global result.
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
