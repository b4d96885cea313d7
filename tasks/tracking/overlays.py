"""Overlay panels for MLflow and reports: the image beside truth and prediction in colours,
with a legend and the image's Dice, at least :data:`MIN_SIDE` pixels wide per panel."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 512  # small images are enlarged (nearest neighbour) so a reviewer can judge edges
_HEADER = 28
# Legend: label -> RGB colour of the pixels it names.
LEGEND = {"truth only": (0, 200, 0), "prediction only": (220, 0, 220), "both": (255, 220, 0)}


def overlay_dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice of the foreground: pixels of a class > 0 predicted as that class, against all
    truth and predicted foreground pixels; 1.0 when both are empty."""
    both = int(((truth > 0) & (pred == truth)).sum())
    total = int((truth > 0).sum() + (pred > 0).sum())
    return 1.0 if total == 0 else 2 * both / total


def _base(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` any dtype -> ``(H, W, 3)`` float in 0..1, 1-99 percentile scaled."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    rgb = rgb.astype(np.float32)
    low, high = np.percentile(rgb, (1, 99))
    return np.clip((rgb - low) / max(high - low, 1e-6), 0, 1).transpose(1, 2, 0)


def _composite(base: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """`base` with each legend colour blended over the pixels it names."""
    out = base.copy()
    masks = {
        "truth only": (truth > 0) & (pred != truth),
        "prediction only": (pred > 0) & (pred != truth),
        "both": (truth > 0) & (pred == truth),
    }
    for label, mask in masks.items():
        out[mask] = 0.4 * out[mask] + 0.6 * np.asarray(LEGEND[label]) / 255
    return out


def _header(width: int, title: str) -> np.ndarray:
    """A black strip with `title` and the legend's colour swatches, ``(_HEADER, width, 3)``."""
    strip = Image.new("RGB", (width, _HEADER))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=16)
    draw.text((6, 5), title, fill=(255, 255, 255), font=font)
    x = width - 6
    for label, colour in reversed(LEGEND.items()):
        x -= int(draw.textlength(label, font=font))
        draw.text((x, 5), label, fill=(255, 255, 255), font=font)
        x -= 22
        draw.rectangle((x, 7, x + 14, 21), fill=colour)
        x -= 14
    return np.asarray(strip)


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str = "") -> np.ndarray:
    """Uint8 RGB panel: a header (`title`, the image's Dice, the legend) over the image beside
    it with truth and prediction coloured (:data:`LEGEND`).

    image ``(C, H, W)`` any dtype (shown percentile scaled), truth and pred ``(H, W)`` class
    ids. Both panels are enlarged by a whole factor until their longer side is at least
    :data:`MIN_SIDE`.
    """
    base = _base(image)
    panel = np.concatenate([base, _composite(base, truth, pred)], axis=1)
    factor = -(-MIN_SIDE // max(truth.shape))
    panel = np.repeat(np.repeat(panel, factor, axis=0), factor, axis=1)
    pixels = (panel * 255).astype(np.uint8)
    heading = f"{title}  Dice {overlay_dice(truth, pred):.3f}".strip()
    return np.concatenate([_header(pixels.shape[1], heading), pixels], axis=0)
