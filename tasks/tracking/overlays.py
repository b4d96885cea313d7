"""Image | truth | prediction panels, for MLflow and reports."""

from __future__ import annotations

import numpy as np


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Side-by-side uint8 RGB panel: image | truth in green | prediction in magenta.

    image ``(C, H, W)`` any dtype (shown min-max scaled), truth and pred ``(H, W)`` class ids.
    """
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    rgb = rgb.astype(np.float32)
    low, high = np.percentile(rgb, (1, 99))
    base = np.clip((rgb - low) / max(high - low, 1e-6), 0, 1).transpose(1, 2, 0)

    def tint(mask: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
        out = base.copy()
        out[mask > 0] = 0.5 * out[mask > 0] + 0.5 * np.asarray(colour)
        return out

    panel = np.concatenate([base, tint(truth, (0, 1, 0)), tint(pred, (1, 0, 1))], axis=1)
    return (panel * 255).astype(np.uint8)
