"""The Dice of the constant predictors, from any prediction's counts, against brute force."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from segflow.models.metrics import (
    confusion_counts,
    constant_counts,
    dice_from_counts,
    trivial_dice_from_counts,
)


def brute_force(target: torch.Tensor, num_classes: int) -> list[float]:
    """Foreground Dice (mean over classes > 0) of a full image of class c, for each c."""
    return [
        float(
            dice_from_counts(confusion_counts(torch.full_like(target, c), target, num_classes))[
                1:
            ].mean()
        )
        for c in range(num_classes)
    ]


@pytest.mark.parametrize(("num_classes", "absent"), [(2, None), (3, None), (4, 2), (2, 1)])
def test_constant_predictors_match_brute_force(num_classes, absent):
    rng = np.random.default_rng(num_classes)
    target = torch.from_numpy(rng.integers(0, num_classes, (5, 13, 11)))
    if absent is not None:  # a class with no pixel: its Dice is 1 unless predicted
        target[target == absent] = 0
    pred = torch.from_numpy(rng.integers(0, num_classes, target.shape))  # any prediction
    counts = confusion_counts(pred, target, num_classes)
    expected = brute_force(target, num_classes)
    np.testing.assert_allclose(trivial_dice_from_counts(counts).numpy(), expected, rtol=1e-12)
    for c in range(num_classes):
        full = confusion_counts(torch.full_like(target, c), target, num_classes)
        assert torch.equal(constant_counts(counts)[c], full)


def test_binary_formulas():
    rng = np.random.default_rng(0)
    target = torch.from_numpy((rng.random((40, 30)) < 0.05).astype(np.int64))
    p, n = int(target.sum()), target.numel()
    background, foreground = trivial_dice_from_counts(confusion_counts(target, target, 2))
    assert background == 0.0
    assert foreground == pytest.approx(2 * p / (p + n), rel=1e-12)
    assert foreground == pytest.approx(f1_score(target.ravel(), np.ones(n, int)), rel=1e-12)
    # No foreground at all: predicting none of it is perfect, predicting all of it is not.
    empty = torch.zeros_like(target)
    background, foreground = trivial_dice_from_counts(confusion_counts(empty, empty, 2))
    assert (background, foreground) == (1.0, 0.0)
