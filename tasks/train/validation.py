"""Validation on whole images: tiles in a grid, scored with exact confusion counts and BCE.

This is a documented approximation of the tiled inference stage: tiles do not overlap and are
predicted without a halo, so pixels next to a tile edge see less context (a small seam cost).
When an epoch's validation would exceed `max_tiles`, a fixed, seeded subset of the tiles is used
in every epoch, so epochs stay comparable. During and after training, :func:`overlay_tiles`
predicts a few val crops for the overlay images.

The trivial baselines are the pooled Dice of the constant predictors (every pixel class c) on
the same tiles (:func:`segflow.models.metrics.constant_counts`): binary, with P foreground of
n pixels, all background scores 0 (1 when the tiles hold no foreground) and all foreground
``2P / (P + n)``. A model that does not beat the best of them has learned nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segflow.models.ensemble import logits_to_probabilities
from segflow.models.metrics import (
    SWEEP_BINS,
    bce_sum,
    ce_sum,
    confusion_counts,
    dice_from_counts,
    iou_from_counts,
    probability_histogram,
    sweep_dice,
    trivial_dice_from_counts,
)
from segflow.tasks.runtime.device import autocast
from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.storage.grid import tile_grid
from segflow.tasks.train.normalization import Normalization

# Tiles per forward pass, and the seed of the fixed subset of tiles when there are too many.
_BATCH = 4
_SEED = 0

# Overlays: the `_OVERLAYS` crops with the most foreground among the first `_OVERLAY_TILES`
# crops of the first `_OVERLAY_IMAGES` val images (bounded reads, a stable choice); a crop is
# large enough to judge (the panels enlarge smaller images).
_OVERLAYS, _OVERLAY_IMAGES, _OVERLAY_TILES = 3, 8, 16
OVERLAY_SIDE = 512


@dataclass(frozen=True)
class ValidationScores:
    """Pixel-pooled validation scores; Dice and IoU of the foreground (mean over classes > 0).

    ``trivial_dice[c]`` is the same Dice of predicting class c at every pixel of the same tiles
    (binary: all background, all foreground).
    """

    dice: float
    iou: float
    bce: float
    per_class_dice: tuple[float, ...]
    trivial_dice: tuple[float, ...]
    sweep: tuple[float, ...] | None = None  # binary: Dice of p >= t, t = 0.01 ... 0.99

    def best_threshold(self) -> tuple[float, float]:
        """The threshold with the best :attr:`sweep` Dice (the one nearest 0.5 among equals)
        and that Dice; ``(0.5, dice)`` without a sweep."""
        if self.sweep is None:
            return 0.5, self.dice
        k = max(range(len(self.sweep)), key=lambda i: (self.sweep[i], -abs(i + 1 - 50)))
        return (k + 1) / SWEEP_BINS, self.sweep[k]


def _tiles(
    store: Store, sample_ids: Sequence[str], tile: int, max_tiles: int
) -> list[tuple[str, int, int]]:
    """The (sample, y, x) tiles validation scores: all, or the fixed subset of `max_tiles`."""
    jobs = [(s, y, x) for s in sample_ids for y, x in tile_grid(store.mask(s).shape, tile)]
    if len(jobs) > max_tiles:
        keep = np.random.default_rng(_SEED).choice(len(jobs), size=max_tiles, replace=False)
        jobs = [jobs[i] for i in sorted(keep)]
    return jobs


def _read_tile(store: Store, sample_id: str, y: int, x: int, tile: int):
    image = np.asarray(store.image(sample_id)[:, y : y + tile, x : x + tile])
    mask = np.asarray(store.mask(sample_id)[y : y + tile, x : x + tile])
    h, w = mask.shape
    pad = ((0, 0), (0, tile - h), (0, tile - w))
    return np.pad(image, pad, mode="symmetric"), mask


def _score_tile(
    prob: torch.Tensor, mask: np.ndarray, binary_class: int | None
) -> tuple[torch.Tensor, tuple[float, int], torch.Tensor | None]:
    """Confusion counts, (summed BCE or CE, pixels) and, binary, the probability histogram of
    one tile's ``(K, T, T)`` probabilities against its ``(h, w)`` mask (the tile may extend
    past the image)."""
    h, w = mask.shape
    prob = prob[:, :h, :w]
    target = torch.from_numpy(mask.astype(np.int64))
    if prob.shape[0] == 1:
        target = (target == (1 if binary_class is None else binary_class)).long()
        counts = confusion_counts((prob[0] >= 0.5).long(), target, 2)
        return counts, bce_sum(prob[0], target), probability_histogram(prob[0], target)
    return confusion_counts(prob.argmax(0), target, prob.shape[0]), ce_sum(prob, target), None


@torch.no_grad()
def validate(
    model: nn.Module,
    store: Store,
    sample_ids: Sequence[str],
    normalization: Normalization,
    *,
    tile: int,
    amp_dtype: torch.dtype | None,
    max_tiles: int,
    binary_class: int | None = None,
) -> ValidationScores:
    """Score `model` on the tiles of the `sample_ids` images (see the module docstring).

    The tiles go to the device of the model's parameters. For a binary model (one logit), the
    target is ``mask == binary_class`` (class 1 by default).

    Raises
    ------
    ValueError
        No tiles to score (`sample_ids` is empty).
    """
    device = next(model.parameters()).device
    jobs = _tiles(store, sample_ids, tile, max_tiles)
    model.eval()
    counts, histogram = None, None
    loss_sum, pixels = 0.0, 0
    for start in range(0, len(jobs), _BATCH):
        tiles = [_read_tile(store, *job, tile) for job in jobs[start : start + _BATCH]]
        images = np.stack([normalization.apply(image) for image, _ in tiles])
        with autocast(device, amp_dtype):
            probs = logits_to_probabilities(model(torch.from_numpy(images).to(device))).cpu()
        for (_, mask), prob in zip(tiles, probs, strict=True):
            tile_counts, part, tile_histogram = _score_tile(prob, mask, binary_class)
            loss_sum, pixels = loss_sum + part[0], pixels + part[1]
            counts = tile_counts if counts is None else counts + tile_counts
            if tile_histogram is not None:
                histogram = tile_histogram if histogram is None else histogram + tile_histogram
    model.train()
    if counts is None:
        raise ValueError("no validation tiles: the validation split is empty")
    dice, iou = dice_from_counts(counts), iou_from_counts(counts)
    return ValidationScores(
        dice=float(dice[1:].mean()),
        iou=float(iou[1:].mean()),
        bce=loss_sum / max(pixels, 1),
        per_class_dice=tuple(float(d) for d in dice),
        trivial_dice=tuple(float(d) for d in trivial_dice_from_counts(counts)),
        sweep=None if histogram is None else tuple(sweep_dice(histogram).tolist()),
    )


def trivial_baseline(
    store: Store,
    sample_ids: Sequence[str],
    *,
    tile: int,
    max_tiles: int,
    num_classes: int,
    binary_class: int | None = None,
) -> tuple[float, ...]:
    """:attr:`ValidationScores.trivial_dice` of the tiles :func:`validate` scores, from the
    masks alone (no model); `num_classes` is the model's (2 for a binary model).

    Raises
    ------
    ValueError
        No tiles (`sample_ids` is empty).
    """
    counts = None
    for sample_id, y, x in _tiles(store, sample_ids, tile, max_tiles):
        target = torch.from_numpy(np.asarray(store.mask(sample_id)[y : y + tile, x : x + tile]))
        if binary_class is not None:
            target = target == binary_class
        tile_counts = confusion_counts(target, target, num_classes)  # a perfect prediction
        counts = tile_counts if counts is None else counts + tile_counts
    if counts is None:
        raise ValueError("no validation tiles: the validation split is empty")
    return tuple(float(d) for d in trivial_dice_from_counts(counts))


@torch.no_grad()
def overlay_tiles(
    model: nn.Module,
    store: Store,
    sample_ids: Sequence[str],
    normalization: Normalization,
    *,
    tile: int,
    binary_class: int | None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The val crops with the most foreground, predicted by `model` (on its device, in fp32;
    its train/eval mode is kept), for overlays.

    A crop is the whole image, or a window of :data:`OVERLAY_SIDE` (at least `tile`) px.

    Returns
    -------
    dict
        ``"<sample>_<y>_<x>"`` -> (image ``(C, h, w)`` as stored, truth ``(h, w)`` class ids,
        or 0/1 for a binary model, prediction ``(h, w)`` uint8), most foreground first.
    """
    side = max(tile, OVERLAY_SIDE)
    candidates = []
    for sample_id in sample_ids[:_OVERLAY_IMAGES]:
        for y, x in tile_grid(store.mask(sample_id).shape, side)[:_OVERLAY_TILES]:
            mask = np.asarray(store.mask(sample_id)[y : y + side, x : x + side])
            candidates.append((int((mask > 0).sum()), sample_id, y, x))
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    tiles = {}
    for _, sample_id, y, x in sorted(candidates, reverse=True)[:_OVERLAYS]:
        image = np.asarray(store.image(sample_id)[:, y : y + side, x : x + side])
        truth = np.asarray(store.mask(sample_id)[y : y + side, x : x + side])
        if binary_class is not None:
            truth = (truth == binary_class).astype(np.uint8)
        batch = torch.from_numpy(normalization.apply(image))[None].float().to(device)
        logits = model(batch).float().cpu()
        pred = (logits[0, 0] > 0) if logits.shape[1] == 1 else logits[0].argmax(0)
        tiles[f"{sample_id}_{y}_{x}"] = (image, truth, pred.numpy().astype(np.uint8))
    model.train(training)
    return tiles
