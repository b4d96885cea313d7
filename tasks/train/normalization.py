"""Per-channel intensity normalisation, estimated from the training samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segflow.tasks.storage.dataset import Dataset as Store


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` applied to images before the model."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` any dtype -> float32."""
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (image.astype(np.float32) - mean) / std


def channel_statistics(
    store: Store, sample_ids: Sequence[str], *, patch: int = 256, per_sample: int = 4, seed: int = 0
) -> Normalization:
    """Mean and std per channel from a few random patches of each sample (bounded reads)."""
    rng = np.random.default_rng(seed)
    total = total_sq = None
    count = 0
    for sample_id in sample_ids:
        image = store.image(sample_id)
        _, height, width = image.shape
        for _ in range(per_sample):
            top = int(rng.integers(0, max(1, height - patch + 1)))
            left = int(rng.integers(0, max(1, width - patch + 1)))
            block = np.asarray(image[:, top : top + patch, left : left + patch], dtype=np.float64)
            flat = block.reshape(block.shape[0], -1)
            total = flat.sum(1) if total is None else total + flat.sum(1)
            sq = (flat**2).sum(1)
            total_sq = sq if total_sq is None else total_sq + sq
            count += flat.shape[1]
    if total is None:
        raise ValueError("no samples to compute channel statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)  # constant channels stay finite
    return Normalization(tuple(float(m) for m in mean), tuple(float(s) for s in std))
