import numpy as np
import pytest
import zarr

from segflow.flows.config import TrainConfig
from segflow.tasks.train.locations import MAX_LOCATIONS, foreground_locations
from segflow.tasks.train.sampling import build_plan, draw_patch, restrict
from segflow.tasks.train.weights import balanced_sample_weights, class_weights


def sampling(**settings):
    """The sampling settings of a TrainConfig with these settings, the others default."""
    return TrainConfig(store="unused", **settings).sampling()


def test_rare_class_samples_get_more_weight():
    counts = {"a": [100, 5, 0], "b": [100, 5, 0], "c": [100, 5, 0], "r": [100, 0, 1]}
    weights = balanced_sample_weights(counts, fg_classes=(1, 2))
    assert sum(weights.values()) == pytest.approx(1.0)
    # class 2 is in one sample: half of the class mass (0.25) lands on it, plus its uniform share
    assert weights["r"] == pytest.approx(0.5 / 4 + 0.25)
    assert weights["a"] == pytest.approx(0.5 / 4 + 0.25 / 3)


def test_class_weights_are_inverse_frequency_and_capped():
    assert class_weights([900, 100]) == pytest.approx((1000 / 1800, 5.0))
    assert class_weights([10_000, 1], cap=10.0)[1] == 10.0
    with pytest.raises(ValueError, match="all be zero"):
        class_weights([0, 0])


def test_unbalanced_plan_is_uniform_without_oversampling():
    counts = {"a": [10, 0], "b": [5, 5]}
    plan = build_plan(counts, sampling(patch_size=16, balance=False))
    assert plan.sample_weights == (0.5, 0.5) and plan.fg_oversample == 0.0
    assert plan.class_weights is None
    assert restrict(build_plan(counts, sampling(patch_size=16)), ["b"]).sample_weights == (1.0,)


def test_foreground_locations_span_blocks_and_respect_the_quota():
    mask = np.zeros((2100, 1500), np.uint8)
    mask[5, 7] = 1
    mask[2050, 1400] = 1
    mask[1000:1200, 1000:1100] = 2  # 20 000 pixels > quota
    array = zarr.create_array(
        zarr.storage.MemoryStore(), shape=mask.shape, dtype="uint8", chunks=(256, 256)
    )
    array[...] = mask
    counts = np.bincount(mask.ravel(), minlength=3)
    found = foreground_locations(array, (1, 2), counts, seed=0)
    assert sorted(map(tuple, found[1])) == [(5, 7), (2050, 1400)]
    assert MAX_LOCATIONS <= len(found[2]) <= MAX_LOCATIONS + 4
    assert (mask[found[2][:, 0], found[2][:, 1]] == 2).all()


def centre_hit_rate(fg_oversample: float, draws: int = 4000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    size, shape = 32, (256, 256)
    masks = {}
    for i in range(4):
        mask = np.zeros(shape, np.uint8)
        y, x = rng.integers(size, 256 - size, size=2)  # away from the clamped border
        mask[y : y + 6, x : x + 6] = 1  # 36 px: 0.05 % foreground
        masks[f"s{i}"] = mask
    counts = {s: np.bincount(m.ravel(), minlength=2).tolist() for s, m in masks.items()}
    plan = build_plan(counts, sampling(patch_size=size, fg_oversample=fg_oversample, seed=seed))
    locations = {s: {1: np.argwhere(m == 1)} for s, m in masks.items()}
    shapes = dict.fromkeys(masks, shape)
    hits = 0
    for _ in range(draws):
        sample_id, top, left = draw_patch(plan, rng, shapes, locations)
        hits += masks[sample_id][top + size // 2, left + size // 2] == 1
    return hits / draws


@pytest.mark.parametrize("fg_oversample", [0.0, 0.33, 0.8])
def test_sampler_centres_the_requested_share_on_foreground(fg_oversample):
    rate = centre_hit_rate(fg_oversample)
    # uniform draws almost never hit 0.05 % foreground; 4 standard deviations of a binomial
    tolerance = 4 * np.sqrt(fg_oversample * (1 - fg_oversample) / 4000) + 0.002
    assert abs(rate - fg_oversample) <= tolerance


def test_draws_are_reproducible_from_the_seed():
    assert centre_hit_rate(0.5, draws=300, seed=3) == centre_hit_rate(0.5, draws=300, seed=3)
