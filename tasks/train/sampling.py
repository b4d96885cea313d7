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
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import zarr

from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import write_index
from segflow.tasks.train.normalization import Normalization, channel_statistics
from segflow.tasks.train.weights import balanced_sample_weights
from segflow.tasks.train.weights import class_weights as balanced_class_weights

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


@dataclass
class Balance:
    """Output of the balance step: the plan and everything training needs besides the data."""

    plan: SamplingPlan
    normalization: Normalization
    locations: dict[str, dict[int, np.ndarray]]
    train_ids: list[str]
    val_ids: list[str]
    class_names: list[str]
    binary_class: int | None  # the foreground class of a binary model, None for multi-class
    in_channels: int
    fractions_before: list[float] = field(default_factory=list)
    fractions_after: list[float] = field(default_factory=list)

    @property
    def out_channels(self) -> int:
        return 1 if self.binary_class is not None else len(self.class_names)


def prepare_balance(
    store_path: str,
    *,
    patch_size: int,
    fg_oversample: float,
    balance: bool,
    class_weights: bool,
    weight_cap: float,
    target_class: int | None,
    seed: int,
    probe_patches: int = 256,
) -> Balance:
    """Build the sampling plan from the store's class counts and record it in the store.

    Raises
    ------
    ValueError
        Empty train or val split, or a `target_class` the store does not have.
    """
    store = open_dataset(store_path)
    train_ids, val_ids = store.samples("train"), store.samples("val")
    if not train_ids or not val_ids:
        raise ValueError(
            f"{store_path}: need samples in train and val, got {len(train_ids)} and "
            f"{len(val_ids)}; re-ingest with a val_fraction > 0"
        )
    num_classes = store.num_classes
    if target_class is not None and target_class >= num_classes:
        raise ValueError(f"target_class {target_class} not in the store's 1..{num_classes - 1}")
    binary_class = target_class if target_class is not None else (1 if num_classes == 2 else None)
    fg_classes = (binary_class,) if binary_class is not None else None
    counts = {s: store.class_counts(s) for s in train_ids}
    plan = build_plan(
        counts,
        patch_size=patch_size,
        fg_oversample=fg_oversample,
        seed=seed,
        balance=balance,
        fg_classes=fg_classes,
    )
    if class_weights:
        totals = np.sum([counts[s] for s in train_ids], axis=0)
        if binary_class is not None:  # a binary model: the class against everything else
            totals = np.array([totals.sum() - totals[binary_class], totals[binary_class]])
        plan = replace(plan, class_weights=balanced_class_weights(totals, cap=weight_cap))
    locations = {
        s: foreground_locations(store.mask(s), plan.fg_classes, counts[s], seed=seed)
        for s in train_ids
    }
    uniform = build_plan(counts, patch_size=patch_size, seed=seed, balance=False)
    result = Balance(
        plan=plan,
        normalization=channel_statistics(store, train_ids, seed=seed),
        locations=locations,
        train_ids=train_ids,
        val_ids=val_ids,
        class_names=store.class_names,
        binary_class=binary_class,
        in_channels=int(store.image(train_ids[0]).shape[0]),
        fractions_before=[
            float(f)
            for f in sampled_class_fractions(
                store, uniform, locations, num_classes, patches=probe_patches
            )
        ],
        fractions_after=[
            float(f)
            for f in sampled_class_fractions(
                store, plan, locations, num_classes, patches=probe_patches
            )
        ],
    )
    write_index(store_path, {"sampling_plan": plan.to_dict()})
    return result


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
