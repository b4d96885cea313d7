"""Training patches drawn from a dataset store by a sampling plan, as a torch Dataset.

Patch ``k`` of epoch ``e`` is a pure function of ``(plan.seed, e, k)``: the data order does not
depend on the number of DataLoader workers, and a resumed run sees exactly the patches an
uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tasks.augment import Augmentation, augment
from tasks.balance import SamplingPlan, draw_patch
from tasks.dataset import Dataset as Store
from tasks.dataset import open_dataset


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


def read_patch(
    store: Store, sample_id: str, top: int, left: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(C, size, size)`` image and ``(size, size)`` mask at (top, left).

    Where the image is smaller than the patch, both are mirrored (symmetric padding): padding
    the mask with background would teach the model that image borders are background.
    """
    image = np.asarray(store.image(sample_id)[:, top : top + size, left : left + size])
    mask = np.asarray(store.mask(sample_id)[top : top + size, left : left + size])
    pad = ((0, size - mask.shape[0]), (0, size - mask.shape[1]))
    if pad[0][1] or pad[1][1]:
        image = np.pad(image, ((0, 0), *pad), mode="symmetric")
        mask = np.pad(mask, pad, mode="symmetric")
    return image, mask


class EpochSampler(Sampler[int]):
    """Indices ``epoch * length + k`` for ``k < length``: the dataset decodes the epoch."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.length, (self.epoch + 1) * self.length))

    def __len__(self) -> int:
        return self.length


class PatchDataset(Dataset):
    """Patches drawn by a :class:`SamplingPlan`, normalised and augmented.

    Items are ``(image (C, P, P) float32, target)`` where target is ``(1, P, P)`` float32 for
    a binary model and ``(P, P)`` int64 class ids otherwise. `binary_class` makes a binary
    target of one class of a multi-class store (the dedicated model).
    """

    def __init__(
        self,
        store_path: str,
        plan: SamplingPlan,
        locations: Mapping[str, Mapping[int, np.ndarray]],
        normalization: Normalization,
        *,
        length: int,
        augmentation: Augmentation | None = None,
        binary_class: int | None = None,
    ) -> None:
        self.store_path = store_path
        self.plan = plan
        self.locations = locations
        self.normalization = normalization
        self.length = length
        self.augmentation = augmentation
        self.binary_class = binary_class
        self._store: Store | None = None
        self._shapes = {s: tuple(self.store.mask(s).shape) for s in plan.sample_ids}

    @property
    def store(self) -> Store:
        # Opened lazily so each DataLoader worker process holds its own handle.
        if self._store is None:
            self._store = open_dataset(self.store_path)
        return self._store

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, k = divmod(index, self.length)
        rng = np.random.default_rng([self.plan.seed, epoch, k])
        sample_id, top, left = draw_patch(self.plan, rng, self._shapes, self.locations)
        image, mask = read_patch(self.store, sample_id, top, left, self.plan.patch_size)
        image = self.normalization.apply(image)
        if self.augmentation is not None:
            image, mask = augment(image, mask, rng, self.augmentation)
        if self.binary_class is not None:
            target = torch.from_numpy((mask == self.binary_class).astype(np.float32))[None]
        else:
            target = torch.from_numpy(mask.astype(np.int64))
        return torch.from_numpy(image), target


def sampled_class_fractions(
    store: Store,
    plan: SamplingPlan,
    locations: Mapping[str, Mapping[int, np.ndarray]],
    num_classes: int,
    *,
    patches: int = 256,
) -> np.ndarray:
    """Class fractions of the pixels in `patches` patches drawn by `plan` (Monte Carlo).

    This is the class distribution the model sees after balancing; with a uniform plan it
    estimates the dataset's own distribution.
    """
    shapes = {s: tuple(store.mask(s).shape) for s in plan.sample_ids}
    rng = np.random.default_rng([plan.seed, 2**31 - 1])  # a stream of its own, not the epochs'
    counts = np.zeros(num_classes, dtype=np.int64)
    size = plan.patch_size
    for _ in range(patches):
        sample_id, top, left = draw_patch(plan, rng, shapes, locations)
        mask = np.asarray(store.mask(sample_id)[top : top + size, left : left + size])
        counts += np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
    return counts / max(1, counts.sum())
