"""The store's fingerprint for planning the training (:mod:`segflow.tasks.train.budget`):
image sizes, channels, class fractions and the scale of the structures to segment.

Cheap and bounded whatever the store holds: shapes and class counts come from the metadata
written at ingest; the structure scale is measured on at most ``MASKS`` train masks, each read
as a centred crop of at most ``CROP``² pixels (about 0.1 s per 1024² mask).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.storage.dataset import open_dataset

MASKS, CROP = 8, 1024


@dataclass(frozen=True)
class Fingerprint:
    """What the plan needs to know of the train split."""

    samples: int  # train samples
    channels: int
    image_side: int  # median over the train images of the shorter side, px
    train_pixels: int  # H * W summed over the train images
    class_fractions: tuple[float, ...]  # pixel share per class (0: background) in the train split
    structure_width: float  # median width of the foreground objects, px; 0 without foreground

    def line(self) -> str:
        """One line for a log."""
        fractions = ", ".join(f"{f:.2%}" for f in self.class_fractions)
        return (
            f"data: {self.samples} train images of {self.channels} channel(s), median side "
            f"{self.image_side} px, objects {self.structure_width:.0f} px wide, "
            f"classes {fractions}"
        )


def object_widths(mask: np.ndarray, classes: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """The width of every object (connected region of one class) of `mask` and its pixels.

    An object's width is the diameter of the largest disc inside it, ``2 d - 1`` for the
    largest distance d of its pixels to another class (a 5 px wide bar: 5; a disc 21 px
    across: 19, the rim being ragged); pixels outside `mask` count as background, so an object
    cut by a crop is as wide as the part inside.

    Parameters
    ----------
    mask
        ``(H, W)`` class ids.
    classes
        The foreground classes to measure.

    Returns
    -------
    tuple of numpy.ndarray
        Widths (float, px) and pixel counts (int), one per object; empty without foreground.
    """
    widths, sizes = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    for c in classes:
        inside = np.pad(mask == c, 1)
        labels, count = ndimage.label(inside)
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        distance = ndimage.distance_transform_edt(inside)
        widths.append(2 * np.asarray(ndimage.maximum(distance, labels, index)) - 1)
        sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:])
    return np.concatenate(widths), np.concatenate(sizes)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half of the total weight lies; 0 for no values."""
    if values.size == 0:
        return 0.0
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _centre_crop(store: Store, sample_id: str) -> np.ndarray:
    array = store.mask(sample_id)
    height, width = array.shape
    top, left = max(0, (height - CROP) // 2), max(0, (width - CROP) // 2)
    return np.asarray(array[top : top + CROP, left : left + CROP])


def fingerprint_store(store_path: str) -> Fingerprint:
    """The fingerprint of the store's train split.

    The structure width is the median, over the foreground pixels of up to ``MASKS`` evenly
    spaced train masks (centred crops of at most ``CROP``²), of the width of the object each
    pixel belongs to (:func:`object_widths`).

    Raises
    ------
    ValueError
        The store has no train samples.
    """
    store = open_dataset(store_path)
    ids = store.samples("train")
    if not ids:
        raise ValueError(f"{store_path}: no train samples to plan from; re-ingest with a split")
    shapes = [tuple(store.mask(s).shape) for s in ids]
    counts = np.sum([store.class_counts(s) for s in ids], axis=0).astype(np.float64)
    picked = ids[:: max(1, len(ids) // MASKS)][:MASKS]
    measured = [object_widths(_centre_crop(store, s), range(1, store.num_classes)) for s in picked]
    widths, sizes = (np.concatenate(parts) for parts in zip(*measured, strict=True))
    return Fingerprint(
        samples=len(ids),
        channels=int(store.image(ids[0]).shape[0]),
        image_side=int(np.median([min(shape) for shape in shapes])),
        train_pixels=int(sum(h * w for h, w in shapes)),
        class_fractions=tuple((counts / max(counts.sum(), 1.0)).tolist()),
        structure_width=weighted_median(widths, sizes),
    )
