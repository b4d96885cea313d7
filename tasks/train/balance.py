"""The balance step: the sampling plan with the levers that meet its target, recorded in the
store, and everything training needs besides the data (:class:`Balance`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from segflow.tasks.storage.dataset import Dataset as Store
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import write_index
from segflow.tasks.train.levers import Levers, Shares, choose_levers
from segflow.tasks.train.locations import foreground_locations
from segflow.tasks.train.normalization import Normalization, channel_statistics
from segflow.tasks.train.sampling import (
    SamplingPlan,
    SamplingSettings,
    build_plan,
    sampled_class_fractions,
)
from segflow.tasks.train.weights import class_weights as balanced_class_weights


@dataclass(frozen=True)
class Balance:
    """Output of the balance step: the plan and everything training needs besides the data."""

    store: str  # the dataset store the plan draws from
    plan: SamplingPlan
    normalization: Normalization
    locations: dict[str, dict[int, np.ndarray]]
    train_ids: list[str]
    val_ids: list[str]
    class_names: list[str]
    binary_class: int | None  # the foreground class of a binary model, None for multi-class
    in_channels: int
    fractions_before: list[float]  # class fractions of uniformly drawn patches
    fractions_after: list[float]  # class fractions of the patches the plan draws
    levers: Levers  # the target, what sampling achieves and what closes the gap

    @property
    def out_channels(self) -> int:
        return 1 if self.binary_class is not None else len(self.class_names)


def _binary_class(target_class: int | None, num_classes: int) -> int | None:
    """The foreground class of a binary model: `target_class`, or 1 in a two-class store."""
    if target_class is not None and target_class >= num_classes:
        raise ValueError(f"target_class {target_class} not in the store's 1..{num_classes - 1}")
    if target_class is not None:
        return target_class
    return 1 if num_classes == 2 else None


def _loss_class_weights(
    counts: Mapping[str, Sequence[int]], binary_class: int | None, cap: float
) -> tuple[float, ...]:
    totals = np.sum(list(counts.values()), axis=0)
    if binary_class is not None:  # a binary model: the class against everything else
        totals = np.array([totals.sum() - totals[binary_class], totals[binary_class]])
    return balanced_class_weights(totals, cap=cap)


def _probe(
    store: Store, plan: SamplingPlan, locations: Mapping, num_classes: int
) -> Callable[[int], Shares]:
    """``measure(window)``: the measured class shares of uniform and foreground-centred
    patches of side `window` drawn by `plan`."""

    def measure(window: int) -> Shares:
        uniform, centred = (
            sampled_class_fractions(
                store, replace(plan, patch_size=window, fg_oversample=o), locations, num_classes
            )
            for o in (0.0, 1.0)
        )
        return Shares(tuple(uniform.tolist()), tuple(centred.tolist()))

    return measure


def plan_levers(
    store: Store, plan: SamplingPlan, locations: Mapping, settings: SamplingSettings
) -> tuple[SamplingPlan, Levers]:
    """The plan with the levers that bring each class to ``settings.target_share`` (see
    :mod:`segflow.tasks.train.levers`); without balancing or target, the plan as it is."""
    num_classes = store.num_classes
    uniform = replace(plan, sample_weights=(1 / len(plan.sample_ids),) * len(plan.sample_ids))
    natural = sampled_class_fractions(
        store, replace(uniform, fg_oversample=0.0), locations, num_classes
    )
    levers = choose_levers(
        _probe(store, plan, locations, num_classes),
        tuple(natural.tolist()),
        plan.fg_classes,
        target=settings.target_share if settings.balance else 0.0,
        patch_size=plan.patch_size,
        multiple=settings.window_multiple,
        fg_oversample=plan.fg_oversample,
        weight_cap=settings.weight_cap,
    )
    return replace(plan, patch_size=levers.window, fg_oversample=levers.fg_oversample), levers


def balance_classes(store_path: str, settings: SamplingSettings) -> Balance:
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
    binary_class = _binary_class(settings.target_class, num_classes)
    counts = {s: store.class_counts(s) for s in train_ids}
    plan = build_plan(counts, settings, None if binary_class is None else (binary_class,))
    locations = {
        s: foreground_locations(store.mask(s), plan.fg_classes, counts[s], seed=settings.seed)
        for s in train_ids
    }
    plan, levers = plan_levers(store, plan, locations, settings)
    if settings.class_weights:  # asked for: inverse-frequency weights, not the levers'
        plan = replace(
            plan, class_weights=_loss_class_weights(counts, binary_class, settings.weight_cap)
        )
        asked = "inverse-frequency loss weights as asked (class_weights), not the plan's"
        levers = replace(levers, loss_weights=None, reasons=(*levers.reasons, asked))
    elif levers.loss_weights is not None:
        weights = levers.loss_weights
        if binary_class is not None:  # background and the model's class
            weights = (1.0, weights[binary_class])
        plan = replace(plan, class_weights=weights)
    result = Balance(
        store=store_path,
        plan=plan,
        normalization=channel_statistics(store, train_ids, seed=settings.seed),
        locations=locations,
        train_ids=train_ids,
        val_ids=val_ids,
        class_names=store.class_names,
        binary_class=binary_class,
        in_channels=int(store.image(train_ids[0]).shape[0]),
        fractions_before=list(levers.natural),
        fractions_after=list(levers.achieved),
        levers=levers,
    )
    write_index(store_path, {"sampling_plan": plan.to_dict()})
    return result
