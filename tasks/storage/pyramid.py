"""Pyramid levels of a prediction store image, written block by block after its blocks.

Level k+1 is level k halved (sizes rounded up): probabilities by the mean of each 2x2 window
(of the pixels inside the image at an odd edge), rounded back to the stored dtype; class ids by
nearest neighbour (the window's top-left pixel), so every id in a level is a predicted one. A
level block reads at most 2 x 2 blocks of the level above, so memory stays bounded by a few
blocks whatever the image size. On object storage the level above is read, and each level
block written, by whole shards (:mod:`segflow.tasks.storage.staging`), mask last as at level 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.levels import level_arrays
from segflow.tasks.storage.predictions import block_done
from segflow.tasks.storage.urls import open_group


def halve_mean(values: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> ``(C, ceil(h/2), ceil(w/2))``: the mean of each 2x2 window (of the
    pixels it holds at an odd edge), in the input's dtype (integers rounded)."""
    _, height, width = values.shape
    padded = np.pad(values, ((0, 0), (0, height % 2), (0, width % 2)), mode="edge")
    c, h, w = padded.shape
    mean = padded.astype(np.float32).reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    if np.issubdtype(values.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(values.dtype)


def halve_nearest(ids: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> ``(C, ceil(h/2), ceil(w/2))``: the top-left pixel of each 2x2 window."""
    return ids[:, ::2, ::2]


def write_pyramid(out: str | Path, name: str, block: int) -> int:
    """Write every pyramid level below level 0 of image `name`, block by block, skipping the
    blocks already written (a block is done when its mask shard exists, as at level 0).

    Returns the number of level blocks written now (0: the pyramid was already complete).
    """
    image = open_group(out, name, mode="r+")
    written = 0
    above = level_arrays(out, image, 0)
    for level in range(1, len(image.attrs["ome"]["multiscales"][0]["datasets"])):
        arrays = level_arrays(out, image, level)
        for region in blocks(arrays.probs.shape[1:], block):
            if block_done(out, name, region, block, level):
                continue
            y0, y1, x0, x1 = region
            window = (slice(None), slice(2 * y0, 2 * y1), slice(2 * x0, 2 * x1))
            arrays.probs[:, y0:y1, x0:x1] = halve_mean(np.asarray(above.probs[window]))
            arrays.mask[:, y0:y1, x0:x1] = halve_nearest(np.asarray(above.mask[window]))
            written += 1
        above = arrays
    return written
