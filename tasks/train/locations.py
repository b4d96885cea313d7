"""Foreground locations: pixel coordinates of each class to centre training patches on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

# Pixel coordinates kept per class and sample to centre patches on; enough for variety,
# small enough to hold for thousands of samples.
MAX_LOCATIONS = 4096


_BLOCK = 1024


def foreground_locations(
    mask: zarr.Array, classes: Sequence[int], counts: Sequence[int], *, seed: int
) -> dict[int, np.ndarray]:
    """Up to ``MAX_LOCATIONS`` random pixel coordinates of each class, read block by block.

    Each 1024² block keeps a share of the quota proportional to its pixels of the class, so
    memory stays bounded for masks of any size.

    Parameters
    ----------
    mask
        ``(H, W)`` class ids.
    classes
        The classes to locate.
    counts
        Pixels per class of `mask` (from the dataset store).
    seed
        Seed of the random choice of pixels.

    Returns
    -------
    dict
        Class -> ``(n, 2)`` int64 array of (y, x); classes absent from the mask are left out.
    """
    rng = np.random.default_rng(seed)
    height, width = mask.shape
    found: dict[int, list[np.ndarray]] = {c: [] for c in classes if counts[c] > 0}
    for y in range(0, height, _BLOCK):
        for x in range(0, width, _BLOCK):
            block = np.asarray(mask[y : y + _BLOCK, x : x + _BLOCK])
            for cls in found:
                ys, xs = np.nonzero(block == cls)
                if ys.size == 0:
                    continue
                quota = int(np.ceil(MAX_LOCATIONS * ys.size / counts[cls]))
                keep = rng.choice(ys.size, size=min(quota, ys.size), replace=False)
                found[cls].append(np.stack([ys[keep] + y, xs[keep] + x], axis=1))
    return {c: np.concatenate(parts) for c, parts in found.items() if parts}
