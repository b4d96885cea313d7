"""OME-Zarr (NGFF 0.5) metadata of the prediction store: pyramid levels and label colours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NGFF_VERSION = "0.5"


# Pyramid levels halve the image until its longer side is at most this (viewers zoom out).
PYRAMID_MIN_SIDE = 1024


_AXES = [
    {"name": "c", "type": "channel"},
    {"name": "y", "type": "space"},
    {"name": "x", "type": "space"},
]


def level_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(H, W) of every pyramid level: level 0 is `shape`, each next one half the one above
    (rounded up) while the one above is longer than ``PYRAMID_MIN_SIDE`` on a side."""
    levels = [tuple(shape)]
    while max(levels[-1]) > PYRAMID_MIN_SIDE:
        levels.append(tuple(-(-side // 2) for side in levels[-1]))
    return levels


def multiscales(name: str, levels: int) -> dict[str, Any]:
    """NGFF ``multiscales`` of `levels` arrays ``0, 1, ...``, level k scaled by 2^k in y, x."""
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0**k, 2.0**k]}],
        }
        for k in range(levels)
    ]
    return {
        "version": NGFF_VERSION,
        "multiscales": [{"name": name, "axes": _AXES, "datasets": datasets}],
    }


# Label colours by class id (RGBA); background (0) transparent; more classes cycle from 1.
_PALETTE = [
    [0, 0, 0, 0],
    [255, 64, 64, 255],
    [64, 160, 255, 255],
    [255, 200, 0, 255],
    [80, 220, 100, 255],
    [200, 90, 255, 255],
    [0, 220, 220, 255],
    [255, 128, 192, 255],
]


def image_label(class_names: Sequence[str]) -> dict[str, Any]:
    """NGFF ``image-label`` metadata of the class-id mask: a colour and the class name of
    every id (background transparent)."""
    ids = range(len(class_names))
    return {
        "version": NGFF_VERSION,
        "source": {"image": "../../"},
        "colors": [
            {"label-value": i, "rgba": _PALETTE[i and 1 + (i - 1) % (len(_PALETTE) - 1)]}
            for i in ids
        ],
        "properties": [{"label-value": i, "class": class_names[i]} for i in ids],
    }
