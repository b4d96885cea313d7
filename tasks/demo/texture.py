"""The smooth background: multi-scale texture and illumination, in global pixel coordinates.

Windows of any size and position agree exactly with the whole image, so a large image can be
rendered tile by tile without seams.
"""

from __future__ import annotations

import math

import numpy as np

from segflow.tasks.demo.look import Look

Grids = list[tuple[int, float, np.ndarray]]  # (cell size px, weight, coarse noise)


# Texture octaves as fractions of the object scale, with their weights.
_OCTAVES = ((1 / 4, 0.55), (1 / 16, 0.3), (1 / 64, 0.15))


# Padding (in coarse cells) around each noise grid so cubic interpolation never reads outside.
_GRID_PAD = 4


# Std of cubic-B-spline-interpolated unit white noise (mean over sub-cell offsets), per axis.
_BSPLINE_STD = 0.4794


def draw_grids(rng: np.random.Generator, shape: tuple[int, int], extent: int) -> Grids:
    """Coarse white-noise grids, one per texture octave, covering `shape` pixels.

    `extent` is the object scale in pixels; the octaves' cell sizes are fractions of it.
    """
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


def texture(grids: Grids, r0: int, c0: int, h: int, w: int) -> np.ndarray:
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


def illumination(look: Look, full: tuple[int, int], r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Linear gradient plus vignette over a window of a `full`-sized image, ``(h, w)``."""
    y = ((np.arange(r0, r0 + h, dtype=np.float32) + 0.5) / full[0] - 0.5)[:, None]
    x = ((np.arange(c0, c0 + w, dtype=np.float32) + 0.5) / full[1] - 0.5)[None, :]
    ramp = look.grad_amp * (y * math.cos(look.grad_angle) + x * math.sin(look.grad_angle))
    return ramp - look.vignette * (y**2 + x**2)
