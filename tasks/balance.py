"""Class balancing by sampling: the sampling plan, class weights and foreground locations.

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
from dataclasses import asdict, dataclass

import numpy as np
import zarr

# Pixel coordinates kept per class and sample to centre patches on; enough for variety,
# small enough to hold for thousands of samples.
MAX_LOCATIONS = 4096
_BLOCK = 1024


@dataclass(frozen=True)
class SamplingPlan:
    """How patches are drawn from the training samples (stored with the dataset)."""

    patch_size: int
    fg_oversample: float
    seed: int
    sample_ids: tuple[str, ...]
    sample_weights: tuple[float, ...]
    fg_classes: tuple[int, ...]
    class_weights: tuple[float, ...] | None = None

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


def balanced_sample_weights(
    class_counts: Mapping[str, Sequence[int]], fg_classes: Sequence[int]
) -> dict[str, float]:
    """Per-sample draw probabilities: half uniform, half split over the foreground classes.

    Parameters
    ----------
    class_counts
        Sample id -> pixels per class.
    fg_classes
        Classes whose presence earns a sample extra weight.

    Returns
    -------
    dict
        Sample id -> probability; the values sum to 1.
    """
    ids = sorted(class_counts)
    if not ids:
        raise ValueError("no samples to weight")
    weights = dict.fromkeys(ids, 0.5 / len(ids))
    present = {c: [s for s in ids if class_counts[s][c] > 0] for c in fg_classes}
    present = {c: members for c, members in present.items() if members}
    if not present:
        return dict.fromkeys(ids, 1.0 / len(ids))
    for members in present.values():
        for sample_id in members:
            weights[sample_id] += 0.5 / len(present) / len(members)
    return weights


def class_weights(totals: Sequence[int], *, cap: float = 10.0) -> tuple[float, ...]:
    """Inverse-frequency class weights ``N / (K * n_c)``, clipped to ``[1/cap, cap]``.

    For a binary problem the BCE ``pos_weight`` is ``weights[1] / weights[0]`` (= n_0 / n_1,
    capped). A class with no pixels gets the cap.
    """
    counts = np.asarray(totals, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError(f"class counts must not all be zero, got {list(totals)}")
    with np.errstate(divide="ignore"):
        raw = counts.sum() / (len(counts) * counts)
    return tuple(float(w) for w in np.clip(raw, 1.0 / cap, cap))


def build_plan(
    class_counts: Mapping[str, Sequence[int]],
    *,
    patch_size: int,
    fg_oversample: float = 0.33,
    seed: int = 0,
    balance: bool = True,
    fg_classes: Sequence[int] | None = None,
) -> SamplingPlan:
    """The sampling plan for the training samples.

    Parameters
    ----------
    class_counts
        Sample id -> pixels per class (from the dataset store).
    balance
        False gives uniform sample weights and no foreground oversampling (the baseline).
    fg_classes
        Foreground classes to balance for; default every class but 0.

    The plan carries no loss class weights; set them with :func:`class_weights` and
    ``dataclasses.replace`` where wanted.
    """
    if not 0.0 <= fg_oversample <= 1.0:
        raise ValueError(f"fg_oversample must be in [0, 1], got {fg_oversample}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    num_classes = len(next(iter(class_counts.values())))
    classes = tuple(fg_classes) if fg_classes is not None else tuple(range(1, num_classes))
    ids = sorted(class_counts)
    if balance:
        weights = balanced_sample_weights(class_counts, classes)
    else:
        weights = dict.fromkeys(ids, 1.0 / len(ids))
    return SamplingPlan(
        patch_size=patch_size,
        fg_oversample=fg_oversample if balance else 0.0,
        seed=seed,
        sample_ids=tuple(ids),
        sample_weights=tuple(weights[s] for s in ids),
        fg_classes=classes,
    )


def foreground_locations(
    mask: zarr.Array, classes: Sequence[int], counts: Sequence[int], *, seed: int = 0
) -> dict[int, np.ndarray]:
    """Up to ``MAX_LOCATIONS`` random pixel coordinates of each class, read block by block.

    Each 1024² block keeps a share of the quota proportional to its pixels of the class, so
    memory stays bounded for masks of any size.

    Returns
    -------
    dict
        Class -> ``(n, 2)`` int64 array of (y, x); classes absent from the mask are left out.
    """
    rng = np.random.default_rng(seed)
    height, width = mask.shape
    found: dict[int, list[np.ndarray]] = {c: [] for c in classes if counts[c] > 0}
    for y in range(0, height, _BLOCK):
        for x in range(0, width, _BLOCK):
            block = np.asarray(mask[y : y + _BLOCK, x : x + _BLOCK])
            for cls in found:
                ys, xs = np.nonzero(block == cls)
                if ys.size == 0:
                    continue
                quota = int(np.ceil(MAX_LOCATIONS * ys.size / counts[cls]))
                keep = rng.choice(ys.size, size=min(quota, ys.size), replace=False)
                found[cls].append(np.stack([ys[keep] + y, xs[keep] + x], axis=1))
    return {c: np.concatenate(parts) for c, parts in found.items() if parts}


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
        Sample id -> class -> ``(n, 2)`` foreground coordinates (:func:`foreground_locations`).
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
    return SamplingPlan(
        patch_size=plan.patch_size,
        fg_oversample=plan.fg_oversample,
        seed=plan.seed,
        sample_ids=tuple(s for s, _ in pairs),
        sample_weights=tuple(w / total for _, w in pairs),
        fg_classes=plan.fg_classes,
        class_weights=plan.class_weights,
    )
