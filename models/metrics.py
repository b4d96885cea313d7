"""Segmentation metrics in two steps: confusion counts from labels, then scores from counts.

Counts are exact int64, so they can be summed over images, tiles or batches before scoring.
Every score ``a / b`` with ``b == 0`` is 1.0: a class absent from both prediction and target
(TP + FP + FN == 0) has Dice = IoU = 1.0, precision is 1.0 when nothing is predicted and recall
1.0 when nothing is true. This is scikit-learn's ``zero_division=1.0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

TP, FP, FN, TN = range(4)


def _check_ids(name: str, labels: Tensor, num_classes: int) -> None:
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must hold integer or bool class ids, got {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} ids must be in [0, {num_classes - 1}], "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def _check_labels(pred: Tensor, target: Tensor, num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (binary masks use 2), got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    _check_ids("pred", pred, num_classes)
    _check_ids("target", target, num_classes)


def counts_from_matrix(matrix: Tensor) -> Tensor:
    """(..., K, K) confusion matrices (rows true, columns predicted) -> (..., K, 4) counts."""
    tp = matrix.diagonal(dim1=-2, dim2=-1)
    fp = matrix.sum(-2) - tp
    fn = matrix.sum(-1) - tp
    tn = matrix.sum((-2, -1)).unsqueeze(-1) - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=-1)


def confusion_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """One-vs-rest TP, FP, FN, TN per class over all elements.

    Parameters
    ----------
    pred, target
        Predicted and true class ids, same shape (any), integer or bool. For binary masks use
        ``num_classes=2``: row 1 is the foreground.
    num_classes
        K >= 2; ids must lie in [0, K).

    Returns
    -------
    Tensor
        int64 (K, 4), columns ``TP, FP, FN, TN``.
    """
    _check_labels(pred, target, num_classes)
    flat = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    matrix = torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)
    return counts_from_matrix(matrix)


def confusion_counts_per_image(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """:func:`confusion_counts` for each image of (N, H, W) ids: int64 (N, K, 4)."""
    _check_labels(pred, target, num_classes)
    if pred.ndim != 3:
        raise ValueError(f"expected (N, H, W) labels, got shape {tuple(pred.shape)}")
    n, k = pred.shape[0], num_classes
    image = torch.arange(n, device=pred.device).view(n, 1, 1)
    flat = ((image * k + target.long()) * k + pred.long()).reshape(-1)
    return counts_from_matrix(torch.bincount(flat, minlength=n * k * k).reshape(n, k, k))


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    empty = denominator == 0
    return torch.where(empty, 1.0, numerator / denominator.masked_fill(empty, 1.0))


def dice_from_counts(counts: Tensor) -> Tensor:
    """Dice ``2TP / (2TP + FP + FN)`` from counts (..., 4): float64 (...); 1.0 when empty."""
    tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou_from_counts(counts: Tensor) -> Tensor:
    """IoU ``TP / (TP + FP + FN)`` from counts (..., 4): float64 (...); 1.0 when empty."""
    tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
    return _ratio(tp, tp + fp + fn)


def constant_counts(counts: Tensor) -> Tensor:
    """The counts of each constant predictor on the same pixels: (K, 4) -> int64 (K, K, 4).

    Row ``c`` holds the one-vs-rest counts of predicting class c at every pixel. With
    ``n_k = TP_k + FN_k`` true pixels of class k and ``n`` pixels in all, class c gets
    ``TP = n_c, FP = n - n_c, FN = 0`` and every other class k ``TP = FP = 0, FN = n_k``.
    Their Dice: ``2 n_c / (n_c + n)`` for class c, and 0 for class k (1 where ``n_k == 0``).
    """
    truth = counts[..., TP] + counts[..., FN]
    total = counts[0].sum()
    own = torch.eye(truth.shape[0], dtype=torch.bool)  # [c, k]: k is the predicted class c
    tp = torch.where(own, truth, 0)
    fp = torch.where(own, total - truth, 0)
    fn = torch.where(own, 0, truth)
    return torch.stack([tp, fp, fn, total - tp - fp - fn], dim=-1)


def trivial_dice_from_counts(counts: Tensor) -> Tensor:
    """Pooled foreground Dice (mean over classes > 0) of predicting class c at every pixel, for
    each c, from the counts (K, 4) of any prediction of the same pixels: float64 (K,).

    Binary (K = 2, P foreground of n pixels): all background scores 0, or 1 when P == 0;
    all foreground ``2P / (P + n)``. See :func:`constant_counts`.
    """
    return dice_from_counts(constant_counts(counts))[:, 1:].mean(-1)


SWEEP_BINS = 100  # probability bins of width 0.01: thresholds 0.01 ... 0.99


def probability_histogram(prob: Tensor, target: Tensor) -> Tensor:
    """Pixels per probability bin ``[k/100, (k+1)/100)`` of the negatives and the positives of
    a binary `target`: int64 (2, 100)."""
    bins = (prob.float().flatten() * SWEEP_BINS).long().clamp(0, SWEEP_BINS - 1)
    index = target.flatten().long() * SWEEP_BINS + bins
    return torch.bincount(index, minlength=2 * SWEEP_BINS).reshape(2, SWEEP_BINS)


def sweep_dice(histogram: Tensor) -> Tensor:
    """Dice of ``p >= k/100`` for k = 1..99 from a :func:`probability_histogram`: float64 (99,);
    1.0 where nothing is predicted or true."""
    at_least = histogram.double().flip(-1).cumsum(-1).flip(-1)[:, 1:]  # pixels with p >= k/100
    fp, tp = at_least[0], at_least[1]
    fn = histogram[1].sum() - tp
    return _ratio(2 * tp, 2 * tp + fp + fn)


def precision_from_counts(counts: Tensor) -> Tensor:
    """Precision ``TP / (TP + FP)`` from counts (..., 4): float64 (...); 1.0 if none predicted."""
    return _ratio(counts[..., TP], counts[..., TP] + counts[..., FP])


def recall_from_counts(counts: Tensor) -> Tensor:
    """Recall ``TP / (TP + FN)`` from counts (..., 4): float64 (...); 1.0 if none true."""
    return _ratio(counts[..., TP], counts[..., TP] + counts[..., FN])


def _check_probs(probs: Tensor) -> Tensor:
    probs = probs.double()
    if probs.numel() and (probs.min() < 0 or probs.max() > 1):
        raise ValueError(
            "expected probabilities in [0, 1] (apply sigmoid/softmax to logits first), "
            f"got values in [{float(probs.min())}, {float(probs.max())}]"
        )
    return probs


def bce_sum(probs: Tensor, target: Tensor, *, eps: float = 1e-7) -> tuple[float, int]:
    """Summed binary cross-entropy (natural log) and pixel count, for an exact chunked mean.

    Parameters
    ----------
    probs
        Foreground probabilities, any shape; clipped to ``[eps, 1 - eps]`` like scikit-learn's
        ``log_loss``, so a confident mistake costs ``-log(eps)`` instead of infinity.
    target
        Same shape, values in {0, 1}, any dtype.

    Returns
    -------
    tuple
        ``(sum, count)``, the sum accumulated in float64; ``sum / count`` is the mean BCE.
    """
    if probs.shape != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} differ")
    truth = target.double()
    if ((truth != 0) & (truth != 1)).any():
        raise ValueError("target must hold only 0 and 1")
    p = _check_probs(probs).clamp(eps, 1 - eps)
    total = -(truth * p.log() + (1 - truth) * (1 - p).log()).sum()
    return float(total), probs.numel()


def ce_sum(probs: Tensor, target: Tensor, *, eps: float = 1e-7) -> tuple[float, int]:
    """Summed multi-class cross-entropy and pixel count, for an exact chunked mean.

    Parameters
    ----------
    probs
        (C, ...) class probabilities, class axis first; clipped to ``[eps, 1 - eps]``.
    target
        (...) integer class ids in [0, C).

    Returns
    -------
    tuple
        ``(sum of -log p[target], count)``, the sum accumulated in float64.
    """
    if probs.shape[1:] != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} must be (C, *target {tuple(target.shape)})")
    _check_ids("target", target, probs.shape[0])
    p = _check_probs(probs).clamp(eps, 1 - eps)
    picked = p.gather(0, target.long().unsqueeze(0))
    return float(-picked.log().sum()), target.numel()
