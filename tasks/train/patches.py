"""Training patches drawn from a dataset store by a sampling plan, as a torch Dataset.

Patch ``k`` of epoch ``e`` is a pure function of ``(plan.seed, e, k)``: the data order does not
depend on the number of DataLoader workers nor on the number of ranks (each takes its share of
the epoch's indices), and a resumed run sees exactly the patches an uninterrupted run would
have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.augment import Augmentation, augment
from segflow.tasks.train.normalization import Normalization
from segflow.tasks.train.sampling import SamplingPlan, draw_patch


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
    """Indices ``epoch * length + k``: the dataset decodes the epoch.

    Rank `rank` of `world` takes ``k = rank + world * i`` for ``i < length // world``, so the
    ranks' shares are disjoint, equally long, and together the epoch of one process (less the
    remainder of ``length / world``); one rank takes every ``k < length``.
    """

    def __init__(self, length: int, rank: int = 0, world: int = 1) -> None:
        self.length, self.rank, self.world = length, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        first = self.epoch * self.length + self.rank
        return iter(range(first, first + self.world * len(self), self.world))

    def __len__(self) -> int:
        return self.length // self.world


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
