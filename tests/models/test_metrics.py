import numpy as np
import pytest
import torch
from sklearn.metrics import (
    f1_score,
    jaccard_score,
    log_loss,
    precision_score,
    recall_score,
)

from segflow.models.metrics import (
    bce_sum,
    ce_sum,
    confusion_counts,
    confusion_counts_per_image,
    dice_from_counts,
    iou_from_counts,
    precision_from_counts,
    recall_from_counts,
)

SCORES = [
    (dice_from_counts, f1_score),
    (iou_from_counts, jaccard_score),
    (precision_from_counts, precision_score),
    (recall_from_counts, recall_score),
]


def labels(num_classes: int, shape=(3, 17, 23), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, shape)
    # Mostly right, so scores are far from trivial.
    pred = np.where(rng.random(shape) < 0.7, target, rng.integers(0, num_classes, shape))
    return pred, target


@pytest.mark.parametrize(("ours", "sklearn_score"), SCORES)
def test_binary_scores_match_sklearn(ours, sklearn_score):
    pred, target = labels(2)
    counts = confusion_counts(torch.from_numpy(pred), torch.from_numpy(target), 2)
    expected = sklearn_score(target.ravel(), pred.ravel(), zero_division=1.0)
    assert ours(counts)[1].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("ours", "sklearn_score"), SCORES)
def test_per_class_scores_match_sklearn_including_absent_classes(ours, sklearn_score):
    pred, target = labels(4)
    pred[pred == 3] = 0
    target[target == 3] = 0  # class 3 absent from both: every score is 1.0
    counts = confusion_counts(torch.from_numpy(pred), torch.from_numpy(target), 4)
    expected = sklearn_score(
        target.ravel(), pred.ravel(), labels=[0, 1, 2, 3], average=None, zero_division=1.0
    )
    np.testing.assert_allclose(ours(counts).numpy(), expected, atol=1e-6)
    assert ours(counts)[3].item() == 1.0


def test_counts_layout_and_dtype():
    pred = torch.tensor([1, 1, 0, 0, 1])
    target = torch.tensor([1, 0, 1, 0, 1])
    counts = confusion_counts(pred.bool(), target, 2)
    assert counts.dtype == torch.int64
    assert counts[1].tolist() == [2, 1, 1, 1]  # TP, FP, FN, TN of the foreground
    assert counts[0].tolist() == [1, 1, 1, 2]


def test_per_image_counts_sum_to_global_counts():
    pred, target = labels(3, shape=(4, 9, 11), seed=1)
    pred, target = torch.from_numpy(pred), torch.from_numpy(target)
    per_image = confusion_counts_per_image(pred, target, 3)
    assert per_image.shape == (4, 3, 4)
    assert torch.equal(per_image.sum(0), confusion_counts(pred, target, 3))
    assert torch.equal(per_image[2], confusion_counts(pred[2], target[2], 3))
    assert dice_from_counts(per_image).shape == (4, 3)


def test_empty_class_scores_one():
    empty = torch.zeros(2, 5, 5, dtype=torch.long)
    counts = confusion_counts(empty, empty, 2)
    for score, _ in SCORES:
        assert score(counts)[1].item() == 1.0
    missed = empty.clone()
    missed[0, 0, 0] = 1
    counts = confusion_counts(empty, missed, 2)  # foreground entirely missed
    assert dice_from_counts(counts)[1].item() == 0.0
    assert precision_from_counts(counts)[1].item() == 1.0  # nothing predicted
    assert recall_from_counts(counts)[1].item() == 0.0


def test_bce_mean_matches_sklearn_log_loss_over_chunks():
    rng = np.random.default_rng(2)
    probs = rng.uniform(0.01, 0.99, (3, 10, 13))
    target = (rng.random(probs.shape) < probs).astype(np.int64)
    chunks = [
        bce_sum(torch.from_numpy(p), torch.from_numpy(t))
        for p, t in zip(probs, target, strict=True)
    ]
    total, count = map(sum, zip(*chunks, strict=True))
    assert count == probs.size
    expected = log_loss(target.ravel(), probs.ravel(), labels=[0, 1])
    assert total / count == pytest.approx(expected, abs=1e-6)


def test_bce_clips_like_log_loss():
    probs = torch.tensor([0.0, 1.0, 1.0, 0.3], dtype=torch.float64)
    target = torch.tensor([1, 0, 1, 0])
    total, count = bce_sum(probs, target, eps=1e-7)
    # sklearn clips to its own (float64 machine) eps, so clip the same way before comparing.
    expected = log_loss(target.numpy(), probs.clip(1e-7, 1 - 1e-7).numpy(), labels=[0, 1])
    assert total / count == pytest.approx(expected, abs=1e-6)
    assert np.isfinite(total)


def test_ce_mean_matches_sklearn_log_loss():
    rng = np.random.default_rng(3)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(4, 6, 7))), dim=0)
    target = torch.from_numpy(rng.integers(0, 4, (6, 7)))
    total, count = ce_sum(probs, target)
    flat = probs.movedim(0, -1).reshape(-1, 4).numpy()
    expected = log_loss(target.ravel().numpy(), flat, labels=[0, 1, 2, 3])
    assert count == 42
    assert total / count == pytest.approx(expected, abs=1e-6)


def test_bad_inputs_raise():
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        confusion_counts(ids, ids, 1)
    with pytest.raises(ValueError, match=r"target ids must be in \[0, 1\], got values in \[0, 2\]"):
        confusion_counts(ids, ids + 2 * torch.eye(2, 3, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="float"):
        confusion_counts(ids.float(), ids, 2)
    with pytest.raises(ValueError, match="differ"):
        confusion_counts(ids, ids.T, 2)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        confusion_counts_per_image(ids, ids, 2)
    with pytest.raises(ValueError, match="apply sigmoid"):
        bce_sum(torch.full((2, 3), 3.0), ids)
    with pytest.raises(ValueError, match="only 0 and 1"):
        bce_sum(torch.full((2, 3), 0.5), ids + 2)
    with pytest.raises(ValueError, match=r"must be \(C, \*target"):
        ce_sum(torch.full((2, 3), 0.5), ids)


def test_threshold_sweep_matches_thresholding_at_every_step():
    from segflow.models.metrics import probability_histogram, sweep_dice

    generator = torch.Generator().manual_seed(0)
    prob = torch.rand(5000, generator=generator)
    target = (torch.rand(5000, generator=generator) < prob).long()
    sweep = sweep_dice(probability_histogram(prob, target))
    assert sweep.shape == (99,)
    for k in (1, 30, 50, 71, 99):
        pred = (prob >= k / 100).long()
        expected = dice_from_counts(confusion_counts(pred, target, 2))[1]
        assert float(sweep[k - 1]) == pytest.approx(float(expected))


def test_best_threshold_prefers_the_best_dice_then_the_one_nearest_half():
    from segflow.tasks.train.validation import ValidationScores

    def scores(sweep):
        return ValidationScores(0.5, 0.4, 0.1, (1.0, 0.5), (0.0, 0.1), sweep)

    peak = [0.1] * 99
    peak[70] = 0.9
    assert scores(tuple(peak)).best_threshold() == (0.71, 0.9)
    assert scores(tuple([0.6] * 99)).best_threshold() == (0.5, 0.6)
    assert scores(None).best_threshold() == (0.5, 0.5)
