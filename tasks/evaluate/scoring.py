"""Exact tallies of predictions against the truth, and the scores that follow from them.

Pure functions over arrays; :mod:`segflow.tasks.evaluate.blocks` reads the stores. An evaluation
is one pass over shard-aligned blocks. Every block yields exact integers, so the totals do not
depend on the order of blocks or the number of workers:

- confusion counts (TP, FP, FN, TN per class) of the stored mask against the truth;
- a histogram of the stored probability *levels* per channel, split by whether the truth is that
  channel's class (256 levels for uint8 storage, every float16 bit pattern for float16).

Cross-entropy of the stored probabilities and Dice at any threshold follow exactly from the
histograms, so nothing but one block is ever in memory and no pixel is visited twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segflow.models.metrics import (
    counts_from_matrix,
    dice_from_counts,
    iou_from_counts,
    precision_from_counts,
    recall_from_counts,
    trivial_dice_from_counts,
)

# Probabilities are clipped to [EPS, 1 - EPS] before the log, as segflow.models.metrics does.
EPS = 1e-7


THRESHOLDS = np.round(np.arange(1, 100) / 100, 2)  # the threshold sweep: 0.01 ... 0.99


def level_values(dtype: str) -> np.ndarray:
    """Probability (float64) of every storable level: ``q / 255`` for uint8, the value of each
    bit pattern for float16."""
    if dtype == "uint8":
        return np.arange(256) / 255
    if dtype == "float16":
        return np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float64)
    raise ValueError(f"unsupported probability dtype {dtype!r}")


def _codes(stored: np.ndarray) -> np.ndarray:
    """Level index of every stored probability."""
    return stored.view(np.uint16) if stored.dtype == np.float16 else stored


@dataclass(frozen=True)
class Layout:
    """How prediction channels and mask ids relate to the truth's class ids."""

    class_names: tuple[str, ...]  # of the evaluated classes (mask ids)
    positive: int | None  # binary model: the truth class it predicts; None: multi-class
    dtype: str  # stored probability dtype
    block: int  # side of the stored shards, pixels

    @property
    def levels(self) -> int:
        """Number of storable probability levels L."""
        return len(level_values(self.dtype))

    def truth_ids(self, truth: np.ndarray) -> np.ndarray:
        """Truth class ids in the prediction's class space."""
        if self.positive is None:
            return truth
        return (truth == self.positive).astype(np.uint8)


@dataclass
class Tally:
    """Exact sums over any set of pixels; ``+`` merges two."""

    counts: np.ndarray  # (K, 4) int64: TP, FP, FN, TN per class
    histogram: np.ndarray  # (C, 2, L) int64: channel, truth is (not) its class, level

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.counts + other.counts, self.histogram + other.histogram)

    @property
    def pixels(self) -> int:
        """Number of pixels tallied."""
        return int(self.counts[0].sum())


def block_counts(mask: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """One-vs-rest counts ``(K, 4)`` of predicted ids `mask` against `truth`, by one NumPy
    ``bincount`` over the pairs: 3x faster than torch's on uint8 blocks, which widens them to
    int64 first (benchmarks/README.md, "Evaluation throughput").

    Raises
    ------
    ValueError
        An id outside ``[0, k)``.
    """
    for name, ids in (("mask", mask), ("truth", truth)):
        if ids.size and int(ids.max()) >= k:
            raise ValueError(f"{name} ids must be in [0, {k - 1}], got up to {int(ids.max())}")
    pairs = truth.astype(np.intp) * k + mask
    matrix = np.bincount(pairs.ravel(), minlength=k * k).reshape(k, k)
    return counts_from_matrix(torch.from_numpy(matrix)).numpy()


def tally_block(probs: np.ndarray, mask: np.ndarray, truth: np.ndarray, layout: Layout) -> Tally:
    """Confusion counts and probability-level histograms of one block.

    Parameters
    ----------
    probs
        Stored probabilities ``(C, h, w)``, of dtype ``layout.dtype`` (uint8 or float16).
    mask
        Stored predicted class ids ``(h, w)``, integer, in the prediction's class space.
    truth
        True class ids ``(h, w)``, integer, in the dataset's class space.
    layout
        How channels and mask ids relate to the truth.

    Returns
    -------
    Tally
        counts ``(K, 4)`` and histogram ``(C, 2, L)``, int64.
    """
    truth = layout.truth_ids(truth)
    counts = block_counts(mask, truth, len(layout.class_names))
    levels = layout.levels
    histogram = np.empty((probs.shape[0], 2, levels), np.int64)
    for c in range(probs.shape[0]):
        cls = 1 if layout.positive is not None else c
        is_class = (truth == cls).astype(np.intp) * levels
        histogram[c] = np.bincount(
            (is_class + _codes(probs[c])).ravel(), minlength=2 * levels
        ).reshape(2, levels)
    return Tally(counts, histogram)


@dataclass(frozen=True)
class Scores:
    """Pixel-pooled scores over some pixels. Dice, IoU, precision and recall are the foreground's
    (binary) or the mean over classes > 0 (multi-class); ``per_class`` has every class.

    ``trivial_dice`` is the same Dice of the constant predictors on the same pixels, the
    baselines a model must beat: ``all_background`` and ``all_foreground`` (binary: 0, or 1
    without foreground; ``2P / (P + n)`` for P foreground of n pixels), or ``all_<class>`` per
    class (see :func:`segflow.models.metrics.constant_counts`).
    """

    pixels: int
    bce: float  # binary cross-entropy (binary) or cross-entropy (multi-class), mean per pixel
    dice: float
    iou: float
    precision: float
    recall: float
    per_class: dict[str, dict[str, float]]  # class name -> metric name -> score
    trivial_dice: dict[str, float]  # constant predictor -> Dice


def cross_entropy_sum(histogram: np.ndarray, values: np.ndarray, binary: bool) -> float:
    """Summed (binary) cross-entropy of the stored probabilities, from level histograms.

    Binary: ``-log p`` where the truth is foreground, ``-log(1 - p)`` elsewhere. Multi-class:
    ``-log p[truth]``, i.e. each channel's levels where the truth is that channel's class.
    `histogram` is ``(C, 2, L)`` int64, `values` the ``(L,)`` float64 probability of each level.

    Raises
    ------
    ValueError
        A NaN level (float16 storage) holds pixels.
    """
    p = np.clip(np.nan_to_num(values, nan=0.5), EPS, 1 - EPS)
    if np.isnan(values).any() and histogram[..., np.isnan(values)].any():
        raise ValueError("the predictions hold NaN probabilities")
    total = histogram[:, 1] @ -np.log(p)
    if binary:
        total = total + histogram[:, 0] @ -np.log1p(-p)
    return float(total.sum())


def scores(tally: Tally, layout: Layout) -> Scores:
    """Scores of the pixels in `tally`; a class absent from both prediction and truth scores
    1.0 (see :mod:`segflow.models.metrics`)."""
    counts = torch.from_numpy(tally.counts)
    per_metric = {
        "dice": dice_from_counts(counts),
        "iou": iou_from_counts(counts),
        "precision": precision_from_counts(counts),
        "recall": recall_from_counts(counts),
    }
    per_class = {
        name: {metric: float(v[i]) for metric, v in per_metric.items()}
        for i, name in enumerate(layout.class_names)
    }
    values = level_values(layout.dtype)
    binary = layout.positive is not None
    loss = cross_entropy_sum(tally.histogram, values, binary) / max(tally.pixels, 1)
    constants = ("background", "foreground") if binary else layout.class_names
    trivial = trivial_dice_from_counts(counts)
    return Scores(
        pixels=tally.pixels,
        bce=loss,
        **{metric: float(v[1:].mean()) for metric, v in per_metric.items()},
        per_class=per_class,
        trivial_dice={f"all_{c}": float(d) for c, d in zip(constants, trivial, strict=True)},
    )


def threshold_sweep(tally: Tally, layout: Layout) -> dict[str, list[float]]:
    """Dice of ``p >= t`` against the truth for every t in :data:`THRESHOLDS`, per foreground
    class (one-vs-rest on its channel)."""
    values = level_values(layout.dtype)
    order = np.argsort(values)  # NaN last; they hold no pixels (checked by cross_entropy_sum)
    sorted_values = values[order]
    first = np.searchsorted(sorted_values, THRESHOLDS, side="left")  # levels >= t start here
    curves = {}
    for c in range(tally.histogram.shape[0]):
        cls = 1 if layout.positive is not None else c
        if cls == 0:
            continue
        negative, positive = tally.histogram[c][:, order]
        at_least = lambda h: np.concatenate([np.cumsum(h[::-1])[::-1], [0]])[first]  # noqa: E731
        tp, fp = at_least(positive), at_least(negative)
        fn = positive.sum() - tp
        denominator = 2 * tp + fp + fn
        dice = np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))
        curves[layout.class_names[cls]] = [float(d) for d in dice]
    return curves
