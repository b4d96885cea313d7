"""Streaming evaluation of a prediction store against the masks of a dataset store.

One pass over shard-aligned blocks. Every block yields exact integers, so the totals do not
depend on the order of blocks or the number of workers:

- confusion counts (TP, FP, FN, TN per class) of the stored mask against the truth;
- a histogram of the stored probability *levels* per channel, split by whether the truth is that
  channel's class (256 levels for uint8 storage, every float16 bit pattern for float16).

Cross-entropy of the stored probabilities and Dice at any threshold follow exactly from the
histograms, so nothing but one block is ever in memory and no pixel is visited twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import zarr

from models.metrics import (
    confusion_counts,
    dice_from_counts,
    iou_from_counts,
    precision_from_counts,
    recall_from_counts,
)
from tasks.cluster import map_unordered
from tasks.dataset import open_dataset
from tasks.predictions import block_done, blocks
from tasks.store import local_path

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before the log, as models.metrics does
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
    block: int

    @property
    def levels(self) -> int:
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
        return int(self.counts[0].sum())


def block_tally(
    predictions: str, store: str, name: str, region: tuple[int, int, int, int], layout: Layout
) -> Tally:
    """Counts and level histograms of one block of one image (reads only that block)."""
    y0, y1, x0, x1 = region
    image = zarr.open_group(local_path(predictions) / name, mode="r")
    probs = np.asarray(image["0"][:, y0:y1, x0:x1])
    mask = np.asarray(image["labels/mask/0"][0, y0:y1, x0:x1])
    truth = layout.truth_ids(np.asarray(open_dataset(store).mask(name)[y0:y1, x0:x1]))
    k = len(layout.class_names)
    counts = confusion_counts(torch.from_numpy(mask), torch.from_numpy(truth), k).numpy()
    levels = layout.levels
    channels = probs.shape[0]
    histogram = np.empty((channels, 2, levels), np.int64)
    for c in range(channels):
        cls = 1 if layout.positive is not None else c
        is_class = (truth == cls).astype(np.intp) * levels
        histogram[c] = np.bincount(
            (is_class + _codes(probs[c])).ravel(), minlength=2 * levels
        ).reshape(2, levels)
    return Tally(counts, histogram)


@dataclass(frozen=True)
class Scores:
    """Pixel-pooled scores over some pixels. Dice, IoU, precision and recall are the foreground's
    (binary) or the mean over classes > 0 (multi-class); ``per_class`` has every class."""

    pixels: int
    bce: float  # binary cross-entropy (binary) or cross-entropy (multi-class), mean per pixel
    dice: float
    iou: float
    precision: float
    recall: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


def cross_entropy_sum(histogram: np.ndarray, values: np.ndarray, binary: bool) -> float:
    """Summed (binary) cross-entropy of the stored probabilities, from level histograms.

    Binary: ``-log p`` where the truth is foreground, ``-log(1 - p)`` elsewhere. Multi-class:
    ``-log p[truth]``, i.e. each channel's levels where the truth is that channel's class.
    """
    p = np.clip(np.nan_to_num(values, nan=0.5), EPS, 1 - EPS)
    if np.isnan(values).any() and histogram[..., np.isnan(values)].any():
        raise ValueError("the predictions hold NaN probabilities")
    total = histogram[:, 1] @ -np.log(p)
    if binary:
        total = total + histogram[:, 0] @ -np.log1p(-p)
    return float(total.sum())


def scores(tally: Tally, layout: Layout) -> Scores:
    """Scores from a tally."""
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
    return Scores(
        pixels=tally.pixels,
        bce=loss,
        **{metric: float(v[1:].mean()) for metric, v in per_metric.items()},
        per_class=per_class,
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


@dataclass(frozen=True)
class Plan:
    """What to evaluate: images, their blocks, and the class layout."""

    predictions: str
    store: str
    split: str | None
    names: tuple[str, ...]
    regions: dict[str, list[tuple[int, int, int, int]]]
    layout: Layout
    meta: dict

    @property
    def jobs(self) -> list[tuple[str, tuple[int, int, int, int]]]:
        return [(name, region) for name in self.names for region in self.regions[name]]


def plan_evaluation(predictions: str, store: str, split: str | None) -> Plan:
    """Check that `predictions` cover every sample of `split` of `store` completely and with
    matching classes and geometry; return the blocks to evaluate.

    Raises
    ------
    ValueError
        Not a prediction store, other classes, a missing or differently sized image, or blocks
        not yet written (with the command that finishes them).
    """
    path = local_path(predictions)
    try:
        root = zarr.open_group(path, mode="r")
    except FileNotFoundError:
        raise ValueError(f"{predictions}: no prediction store here") from None
    meta = dict(root.attrs.get("segflow", {}))
    if meta.get("kind") != "predictions":
        raise ValueError(f"{predictions}: not a segflow prediction store")
    dataset = open_dataset(store)
    names = tuple(dataset.samples(split))
    if not names:
        raise ValueError(f"{store}: no samples in split {split!r}")
    missing = [n for n in names if n not in root]
    if missing:
        raise ValueError(
            f"{predictions}: no predictions for {len(missing)} of {len(names)} samples "
            f"({', '.join(missing[:5])}...); run `segflow infer {store} {predictions}"
            + (f" --split {split}`" if split else "`")
        )
    layout = _layout(meta, dataset.class_names, predictions, store)
    regions = {}
    for name in names:
        probs = root[f"{name}/0"]
        truth = dataset.mask(name)
        if probs.shape[1:] != truth.shape:
            raise ValueError(
                f"{predictions}/{name}: predictions are {probs.shape[1:]}, the truth in {store} "
                f"is {truth.shape}"
            )
        if str(probs.dtype) != layout.dtype or probs.shards[1] != layout.block:
            raise ValueError(f"{predictions}/{name}: stored unlike the other images")
        regions[name] = blocks(truth.shape, layout.block)
        undone = [r for r in regions[name] if not block_done(path, name, r, layout.block)]
        if undone:
            raise ValueError(
                f"{predictions}/{name}: {len(undone)} of {len(regions[name])} blocks not "
                "written yet; re-run the same `segflow infer` command to finish them"
            )
    return Plan(predictions, store, split, names, regions, layout, meta)


def _layout(meta: dict, store_classes: list[str], predictions: str, store: str) -> Layout:
    model_classes = list(meta.get("class_names", []))
    if model_classes != store_classes:
        raise ValueError(
            f"{predictions}: the model's classes {model_classes} are not the classes of "
            f"{store} {store_classes}"
        )
    settings = meta.get("settings", {})
    dtype, block = settings.get("probability_dtype"), settings.get("block")
    binary = meta.get("binary_class")
    if binary is None and len(store_classes) == 2:
        binary = 1
    if binary is None:
        return Layout(tuple(store_classes), None, dtype, block)
    name = store_classes[binary]
    return Layout((f"not {name}" if binary != 1 else store_classes[0], name), binary, dtype, block)


# Below this many pixels one in-process worker beats a LocalCluster, whose start-up (~5 s)
# outweighs the work: 8192² took 2.5 s in-process, 6.9 s on 2 workers (benchmarks/README.md).
IN_PROCESS_PIXELS = 2**28


def default_evaluation_workers(plan: Plan, cores: int) -> int:
    """One in-process worker for small evaluations, else one per core."""
    pixels = sum((r[1] - r[0]) * (r[3] - r[2]) for _, r in plan.jobs)
    return 1 if pixels <= IN_PROCESS_PIXELS else cores


@dataclass
class Evaluation:
    """Scores per image and pooled over all images, and the pooled threshold sweep."""

    plan: Plan
    images: dict[str, Scores]
    pooled: Scores
    sweep: dict[str, list[float]]


def evaluate(
    plan: Plan,
    *,
    workers: int = 1,
    dask_address: str | None = None,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Tally every block of `plan` (in this process for one worker, else on Dask, see
    :func:`tasks.cluster.map_unordered`) and score them.

    Blocks finish in any order; an image is scored as soon as its last block is in, so only
    the tallies of unfinished images are held.
    """
    jobs = plan.jobs
    remaining = {name: len(plan.regions[name]) for name in plan.names}
    partial: dict[str, Tally] = {}
    images: dict[str, Scores] = {}
    total: Tally | None = None
    every = max(1, len(jobs) // 20)
    arguments = [(plan.predictions, plan.store, n, r, plan.layout) for n, r in jobs]
    results = map_unordered(
        block_tally, arguments, workers=workers, dask_address=dask_address, log=log
    )
    for done, (args, tally) in enumerate(results, start=1):
        name = args[2]
        partial[name] = partial[name] + tally if name in partial else tally
        remaining[name] -= 1
        if remaining[name] == 0:
            finished = partial.pop(name)
            images[name] = scores(finished, plan.layout)
            total = finished if total is None else total + finished
        if done % every == 0 or done == len(jobs):
            log(f"[{done}/{len(jobs)}] blocks evaluated")
    assert total is not None and not partial
    return Evaluation(
        plan=plan,
        images={n: images[n] for n in plan.names},
        pooled=scores(total, plan.layout),
        sweep=threshold_sweep(total, plan.layout),
    )


def thumbnail(plan: Plan, name: str, max_side: int = 512) -> tuple[np.ndarray, ...]:
    """Strided (image, truth, predicted mask) of one image, at most `max_side` per side."""
    dataset = open_dataset(plan.store)
    truth = dataset.mask(name)
    step = max(1, -(-max(truth.shape) // max_side))
    view = np.s_[::step, ::step]
    image = np.asarray(dataset.image(name)[(slice(None), *view)])
    mask = zarr.open_group(local_path(plan.predictions) / name, mode="r")["labels/mask/0"]
    return (
        image,
        plan.layout.truth_ids(np.asarray(truth[view])),
        np.asarray(mask[(0, *view)]),
    )


def evaluation_key(store_fingerprint: str, split: str | None) -> str:
    """Identifies the evaluated pixels: scores are comparable only under equal keys."""
    return f"{store_fingerprint[:16]}:{split or 'all'}"
