"""Validation on whole images: tiles in a grid, scored with exact confusion counts and BCE.

This is a documented approximation of the tiled inference stage: tiles do not overlap and are
predicted without a halo, so pixels next to a tile edge see less context (a small seam cost).
When an epoch's validation would exceed `max_tiles`, a fixed, seeded subset of the tiles is used
in every epoch, so epochs stay comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segflow.models.ensemble import logits_to_probabilities
from segflow.models.metrics import (
    bce_sum,
    ce_sum,
    confusion_counts,
    dice_from_counts,
    iou_from_counts,
)
from segflow.tasks.runtime.device import autocast
from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.storage.grid import tile_grid
from segflow.tasks.train.normalization import Normalization


@dataclass(frozen=True)
class Scores:
    """Pixel-pooled validation scores; Dice and IoU of the foreground (mean over classes > 0)."""

    dice: float
    iou: float
    bce: float
    per_class_dice: tuple[float, ...]


def _read_tile(store: Store, sample_id: str, y: int, x: int, tile: int):
    image = np.asarray(store.image(sample_id)[:, y : y + tile, x : x + tile])
    mask = np.asarray(store.mask(sample_id)[y : y + tile, x : x + tile])
    h, w = mask.shape
    pad = ((0, 0), (0, tile - h), (0, tile - w))
    return np.pad(image, pad, mode="symmetric"), mask


@torch.no_grad()
def validate(
    model: nn.Module,
    store: Store,
    sample_ids: Sequence[str],
    normalization: Normalization,
    *,
    tile: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    max_tiles: int = 256,
    batch: int = 4,
    binary_class: int | None = None,
    seed: int = 0,
) -> Scores:
    """Score `model` on the tiles of the `sample_ids` images (see the module docstring).

    For a binary model (one logit), the target is ``mask == binary_class`` (class 1 by default).
    """
    jobs = [(s, y, x) for s in sample_ids for y, x in tile_grid(store.mask(s).shape, tile)]
    if len(jobs) > max_tiles:
        keep = np.random.default_rng(seed).choice(len(jobs), size=max_tiles, replace=False)
        jobs = [jobs[i] for i in sorted(keep)]
    model.eval()
    counts = None
    loss_sum, pixels = 0.0, 0
    for start in range(0, len(jobs), batch):
        tiles = [_read_tile(store, *job, tile) for job in jobs[start : start + batch]]
        images = np.stack([normalization.apply(image) for image, _ in tiles])
        with autocast(device, amp_dtype):
            probs = logits_to_probabilities(model(torch.from_numpy(images).to(device))).cpu()
        binary = probs.shape[1] == 1
        num_classes = 2 if binary else probs.shape[1]
        for (_, mask), prob in zip(tiles, probs, strict=True):
            h, w = mask.shape
            prob = prob[:, :h, :w]
            target = torch.from_numpy(mask.astype(np.int64))
            if binary:
                target = (target == (1 if binary_class is None else binary_class)).long()
                pred = (prob[0] >= 0.5).long()
                part = bce_sum(prob[0], target)
            else:
                pred = prob.argmax(0)
                part = ce_sum(prob, target)
            loss_sum, pixels = loss_sum + part[0], pixels + part[1]
            tile_counts = confusion_counts(pred, target, num_classes)
            counts = tile_counts if counts is None else counts + tile_counts
    model.train()
    if counts is None:
        raise ValueError("no validation tiles: the validation split is empty")
    dice, iou = dice_from_counts(counts), iou_from_counts(counts)
    return Scores(
        dice=float(dice[1:].mean()),
        iou=float(iou[1:].mean()),
        bce=loss_sum / max(pixels, 1),
        per_class_dice=tuple(float(d) for d in dice),
    )
