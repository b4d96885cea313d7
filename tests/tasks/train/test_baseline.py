"""Trivial baselines on validation, the weights a member keeps, and the model's verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.models.unet import build_unet
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.ensemble import MemberResult
from segflow.tasks.train.keeping import keep_learned
from segflow.tasks.train.normalization import channel_statistics
from segflow.tasks.train.registration import NEWEST, model_verdict, unlearned_reason
from segflow.tasks.train.validation import trivial_baseline, validate
from tests.images import make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("baseline"), count=8, size=80, fg_fraction=0.1)


def test_baseline_is_the_constant_predictors_on_the_validated_tiles(store):
    dataset = open_dataset(store)
    val = dataset.samples("val")
    torch.manual_seed(0)
    model = build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4)
    norm = channel_statistics(dataset, dataset.samples("train"))
    # Every tile (32-pixel tiles cover the 80² images, edges included): all val pixels.
    scores = validate(model, dataset, val, norm, tile=32, amp_dtype=None, max_tiles=10**6)
    truth = np.concatenate([np.asarray(dataset.mask(s)).ravel() for s in val]) == 1
    p, n = int(truth.sum()), truth.size
    assert p > 0
    assert scores.trivial_dice == pytest.approx((0.0, 2 * p / (p + n)), rel=1e-12)
    baseline = trivial_baseline(dataset, val, tile=32, max_tiles=10**6, num_classes=2)
    assert baseline == scores.trivial_dice
    # A seeded subset of the tiles: the baseline is measured on the same subset.
    subset = validate(model, dataset, val, norm, tile=32, amp_dtype=None, max_tiles=5)
    assert subset.trivial_dice != scores.trivial_dice
    assert trivial_baseline(dataset, val, tile=32, max_tiles=5, num_classes=2) == (
        subset.trivial_dice
    )


@pytest.mark.parametrize(
    ("preferred", "best", "last", "kept", "learned"),
    [
        ("last", 0.50, 0.40, "last", True),  # the preferred beats the baseline: kept
        ("last", 0.50, 0.02, "best", True),  # the degenerate last weights: fall back to best
        ("best", 0.03, 0.40, "last", True),  # a tie is no better: fall back to last
        ("best", 0.03, 0.01, "best", False),  # neither beats it: preferred, not learned
        ("last", 0.70, float("nan"), "best", True),  # last unknown (old checkpoint)
    ],
)
def test_kept_weights_beat_the_trivial_baseline(preferred, best, last, kept, learned):
    assert keep_learned(preferred, {"best": best, "last": last}, 0.03) == (kept, learned)


@pytest.mark.parametrize(
    ("preferred", "best", "last", "ema", "kept", "learned"),
    [
        ("ema", 0.50, 0.60, 0.55, "ema", True),  # asked for and learned: kept, not the best
        ("last", 0.02, 0.01, 0.40, "ema", True),  # only the average learned: it is kept
        ("ema", 0.45, 0.50, 0.02, "last", True),  # a degenerate average: the best other
        ("best", 0.01, 0.35, 0.40, "ema", True),  # of the others, the higher val Dice
        ("ema", 0.01, 0.02, 0.03, "ema", False),  # none beats it: preferred, not learned
        ("ema", 0.01, 0.02, float("nan"), "ema", False),  # unknown never beats it
    ],
)
def test_the_baseline_guard_considers_the_average(preferred, best, last, ema, kept, learned):
    dice = {"best": best, "last": last, "ema": ema}
    assert keep_learned(preferred, dice, 0.03) == (kept, learned)


def test_keeping_a_missing_checkpoint_is_refused():
    with pytest.raises(ValueError, match="no 'ema' checkpoint.*'best', 'last'"):
        keep_learned("ema", {"best": 0.5, "last": 0.4}, 0.03)


def member(k: int, val_dice: float, learned: bool) -> MemberResult:
    return MemberResult(
        k, f"m{k}/last.pt", "r", 2, 1, val_dice, "epochs", "last", val_dice, learned,
        "all_foreground", 0.0263, 0.5, val_dice,
    )  # fmt: skip


def test_verdict_and_alias():
    learned = model_verdict([member(0, 0.81, True)], alias_unlearned=False)
    assert (learned.learned, learned.alias) == (True, NEWEST)
    assert learned.description == "learned: val Dice 0.8100 > 0.0263 of predicting all foreground"
    members = [member(0, 0.81, True), member(1, 0.007, False)]
    reason = "member 1: val Dice 0.0070 <= 0.0263 of predicting all foreground"
    assert unlearned_reason(members) == reason
    assert unlearned_reason([member(0, 0.007, False)]) == reason.removeprefix("member 1: ")
    verdict = model_verdict(members, alias_unlearned=False)
    assert (verdict.learned, verdict.alias) == (False, None)
    assert verdict.description == (
        f"did not learn: {reason} on the validation tiles; not given the alias 'newest' "
        "(alias_unlearned gives it)"
    )
    assert model_verdict(members, alias_unlearned=True).alias == NEWEST
