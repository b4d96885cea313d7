"""Class balancing by sampling: the sampling plan and the patch draw.

The plan says how training patches are drawn so that rare classes are seen (nnU-Net style):

- a sample is chosen by weight: half the probability mass is uniform over samples, the other
  half is split equally between the foreground classes and, within a class, equally between the
  samples that contain it, so a class present in one image is drawn as often as a common one;
- with probability ``fg_oversample`` the patch is centred on a random pixel of a foreground class
  present in that sample (chosen uniformly among them), otherwise its position is uniform.

Everything is reproducible from the plan and its seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.train.weights import balanced_sample_weights

# Patches drawn to estimate the class distribution before and after balancing.
PROBE_PATCHES = 256


@dataclass(frozen=True)
class SamplingSettings:
    """How the balance step builds the plan (built by ``TrainConfig.sampling()``)."""

    patch_size: int
    fg_oversample: float
    balance: bool  # False: uniform sample weights, no foreground oversampling (the baseline)
    class_weights: bool  # inverse-frequency loss weights, capped at `weight_cap`
    weight_cap: float
    target_class: int | None  # the class of a dedicated binary model
    seed: int
    target_share: float  # foreground share per class the levers aim at; 0: sampling as set
    window_multiple: int  # sampling windows are multiples of this (the U-Net's down-sampling)


@dataclass(frozen=True)
class SamplingPlan:
    """How patches are drawn from the training samples (stored with the dataset)."""

    patch_size: int
    fg_oversample: float
    seed: int
    sample_ids: tuple[str, ...]
    sample_weights: tuple[float, ...]
    fg_classes: tuple[int, ...]
    class_weights: tuple[float, ...] | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> SamplingPlan:
        fields = dict(data)
        for key in ("sample_ids", "sample_weights", "fg_classes"):
            fields[key] = tuple(fields[key])
        if fields.get("class_weights") is not None:
            fields["class_weights"] = tuple(fields["class_weights"])
        return cls(**fields)


def build_plan(
    class_counts: Mapping[str, Sequence[int]],
    settings: SamplingSettings,
    fg_classes: Sequence[int] | None = None,
) -> SamplingPlan:
    """The sampling plan for the training samples.

    Parameters
    ----------
    class_counts
        Sample id -> pixels per class (from the dataset store).
    settings
        Patch size, oversampling, seed; ``balance=False`` gives uniform sample weights and no
        foreground oversampling (the baseline). Its class-weight fields are not used here.
    fg_classes
        Foreground classes to balance for; None: every class but 0.

    Returns
    -------
    SamplingPlan
        Without loss class weights (the balance step adds them).

    Raises
    ------
    ValueError
        `fg_oversample` outside [0, 1] or a `patch_size` < 1.
    """
    if not 0.0 <= settings.fg_oversample <= 1.0:
        raise ValueError(f"fg_oversample must be in [0, 1], got {settings.fg_oversample}")
    if settings.patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {settings.patch_size}")
    num_classes = len(next(iter(class_counts.values())))
    classes = tuple(fg_classes) if fg_classes is not None else tuple(range(1, num_classes))
    ids = sorted(class_counts)
    if settings.balance:
        weights = balanced_sample_weights(class_counts, classes)
    else:
        weights = dict.fromkeys(ids, 1.0 / len(ids))
    return SamplingPlan(
        patch_size=settings.patch_size,
        fg_oversample=settings.fg_oversample if settings.balance else 0.0,
        seed=settings.seed,
        sample_ids=tuple(ids),
        sample_weights=tuple(weights[s] for s in ids),
        fg_classes=classes,
        class_weights=None,
    )


def draw_patch(
    plan: SamplingPlan,
    rng: np.random.Generator,
    shapes: Mapping[str, tuple[int, int]],
    locations: Mapping[str, Mapping[int, np.ndarray]],
) -> tuple[str, int, int]:
    """Draw one patch: (sample id, top, left); the patch may extend past a small image.

    Parameters
    ----------
    shapes
        Sample id -> (H, W).
    locations
        Sample id -> class -> ``(n, 2)`` foreground coordinates (``foreground_locations``).
    """
    index = rng.choice(len(plan.sample_ids), p=np.asarray(plan.sample_weights))
    sample_id = plan.sample_ids[index]
    height, width = shapes[sample_id]
    size = plan.patch_size
    classes = [c for c in plan.fg_classes if c in locations.get(sample_id, {})]
    if classes and rng.random() < plan.fg_oversample:
        points = locations[sample_id][classes[rng.integers(len(classes))]]
        cy, cx = points[rng.integers(len(points))]
        top, left = int(cy) - size // 2, int(cx) - size // 2
    else:
        top = int(rng.integers(0, max(1, height - size + 1)))
        left = int(rng.integers(0, max(1, width - size + 1)))
    top = min(max(top, 0), max(0, height - size))
    left = min(max(left, 0), max(0, width - size))
    return sample_id, top, left


def restrict(plan: SamplingPlan, sample_ids: Sequence[str]) -> SamplingPlan:
    """The same plan over a subset of its samples (weights renormalised), e.g. for a fold."""
    keep = set(sample_ids)
    pairs = [(s, w) for s, w in zip(plan.sample_ids, plan.sample_weights, strict=True) if s in keep]
    if not pairs:
        raise ValueError("restricting the plan left no samples")
    total = sum(w for _, w in pairs)
    return replace(
        plan,
        sample_ids=tuple(s for s, _ in pairs),
        sample_weights=tuple(w / total for _, w in pairs),
    )


def sampled_class_fractions(
    store: Store,
    plan: SamplingPlan,
    locations: Mapping[str, Mapping[int, np.ndarray]],
    num_classes: int,
) -> np.ndarray:
    """Class fractions of the pixels in ``PROBE_PATCHES`` patches drawn by `plan` (Monte Carlo).

    This is the class distribution the model sees after balancing; with a uniform plan it
    estimates the dataset's own distribution.

    Returns
    -------
    np.ndarray
        ``(num_classes,)`` float64 summing to 1 (all zeros if no pixel was drawn).
    """
    shapes = {s: tuple(store.mask(s).shape) for s in plan.sample_ids}
    rng = np.random.default_rng([plan.seed, 2**31 - 1])  # a stream of its own, not the epochs'
    counts = np.zeros(num_classes, dtype=np.int64)
    size = plan.patch_size
    for _ in range(PROBE_PATCHES):
        sample_id, top, left = draw_patch(plan, rng, shapes, locations)
        mask = np.asarray(store.mask(sample_id)[top : top + size, left : left + size])
        counts += np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
    return counts / max(1, counts.sum())
