"""Segmentation losses on logits: pure functions, a thin ``nn.Module`` shell, and a registry.

Every function takes logits (N, C, H, W). C == 1 is binary (sigmoid): the target is (N, 1, H, W)
or (N, H, W) with values in {0, 1}, any dtype. C >= 2 is multi-class (softmax): the target is
(N, H, W) integer class ids in [0, C). Losses are computed in float32, also under bf16 autocast,
because sums over millions of pixels lose too much in bf16.

Soft Dice and Jaccard sum over the whole batch (N, H, W) per class, then average over classes;
in the binary case only the foreground counts. A class absent from the target and (softly) from
the prediction has score ``smooth / smooth`` = 1, i.e. loss 0: an empty mask predicted empty is
perfect, and ``smooth`` keeps the ratio and its gradient finite there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Weight = float | Sequence[float] | Tensor


def _check_logits(logits: Tensor) -> None:
    if logits.ndim != 4 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be floating (N, C, H, W), got {logits.dtype} {tuple(logits.shape)}"
        )


def _binary_target(logits: Tensor, target: Tensor) -> Tensor:
    """Target as float32 (N, 1, H, W) for binary logits (N, 1, H, W)."""
    _check_logits(logits)
    if logits.shape[1] != 1:
        raise ValueError(f"binary losses need logits with C == 1, got C = {logits.shape[1]}")
    if target.ndim == 3:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
        )
    return target.to(torch.float32)


def _class_ids(logits: Tensor, target: Tensor) -> Tensor:
    """Target as int64 (N, H, W) ids in [0, C) for multi-class logits (N, C, H, W)."""
    _check_logits(logits)
    n, c, h, w = logits.shape
    if c < 2:
        raise ValueError(f"multi-class losses need logits with C >= 2, got C = {c}")
    if target.shape != (n, h, w):
        raise ValueError(f"target must be (N, H, W) = {(n, h, w)}, got {tuple(target.shape)}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"multi-class target must hold integer class ids, got {target.dtype}")
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= c:
        raise ValueError(f"class ids must be in [0, {c - 1}], got values in [{low}, {high}]")
    return target.long()


def _as_weight(weight: Weight, like: Tensor) -> Tensor:
    return torch.as_tensor(weight, dtype=torch.float32, device=like.device)


def _soft_overlap(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class soft intersection and cardinality (sum p + sum t) over N, H, W; both (C,)."""
    if logits.shape[1] == 1:
        probs, truth = torch.sigmoid(logits.float()), _binary_target(logits, target)
    else:
        probs = torch.softmax(logits.float(), dim=1)
        truth = F.one_hot(_class_ids(logits, target), logits.shape[1]).permute(0, 3, 1, 2)
    dims = (0, 2, 3)
    return (probs * truth).sum(dims), probs.sum(dims) + truth.sum(dims)


def soft_dice_loss(
    logits: Tensor, target: Tensor, *, smooth: float = 1.0, eps: float = 1e-7
) -> Tensor:
    """``1 - mean_c (2 I_c + smooth) / (|P_c| + |T_c| + smooth)``, a scalar.

    ``eps`` bounds the denominator away from zero when ``smooth`` is 0.
    """
    intersection, cardinality = _soft_overlap(logits, target)
    dice = (2 * intersection + smooth) / (cardinality + smooth).clamp_min(eps)
    return 1 - dice.mean()


def soft_jaccard_loss(
    logits: Tensor, target: Tensor, *, smooth: float = 1.0, eps: float = 1e-7
) -> Tensor:
    """Soft IoU loss ``1 - mean_c (I_c + smooth) / (|P_c| + |T_c| - I_c + smooth)``, a scalar."""
    intersection, cardinality = _soft_overlap(logits, target)
    iou = (intersection + smooth) / (cardinality - intersection + smooth).clamp_min(eps)
    return 1 - iou.mean()


def bce_loss(logits: Tensor, target: Tensor, pos_weight: Weight | None = None) -> Tensor:
    """Mean binary cross-entropy with logits (N, 1, H, W); ``pos_weight`` scales positives."""
    truth = _binary_target(logits, target)
    weight = None if pos_weight is None else _as_weight(pos_weight, logits)
    return F.binary_cross_entropy_with_logits(logits.float(), truth, pos_weight=weight)


def ce_loss(logits: Tensor, target: Tensor, *, class_weights: Weight | None = None) -> Tensor:
    """Mean cross-entropy of logits (N, C, H, W) against ids (N, H, W), optionally weighted."""
    ids = _class_ids(logits, target)
    weight = None
    if class_weights is not None:
        weight = _as_weight(class_weights, logits)
        if weight.shape != (logits.shape[1],):
            raise ValueError(
                f"class_weights must have one value per class ({logits.shape[1]}), "
                f"got shape {tuple(weight.shape)}"
            )
    return F.cross_entropy(logits.float(), ids, weight=weight)


def bce_dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    pos_weight: Weight | None = None,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1.0,
) -> Tensor:
    """``bce_weight * bce_loss + dice_weight * soft_dice_loss`` for binary logits (N, 1, H, W)."""
    bce = bce_loss(logits, target, pos_weight)
    return bce_weight * bce + dice_weight * soft_dice_loss(logits, target, smooth=smooth)


def ce_dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_weights: Weight | None = None,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1.0,
) -> Tensor:
    """``ce_weight * ce_loss + dice_weight * soft_dice_loss`` for logits (N, C >= 2, H, W)."""
    ce = ce_loss(logits, target, class_weights=class_weights)
    return ce_weight * ce + dice_weight * soft_dice_loss(logits, target, smooth=smooth)


class SegmentationLoss(nn.Module):
    """Thin shell over one loss function: ``forward(logits, target) -> scalar``.

    ``pos_weight`` and ``class_weights`` become (non-persistent) buffers so ``.to(device)``
    moves them; other keyword arguments are passed to ``fn`` on every call.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        *,
        pos_weight: Weight | None = None,
        class_weights: Weight | None = None,
        **kwargs: float,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs
        for name, value in (("pos_weight", pos_weight), ("class_weights", class_weights)):
            buffer = None if value is None else torch.as_tensor(value, dtype=torch.float32)
            self.register_buffer(name, buffer, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        weights = {
            name: getattr(self, name)
            for name in ("pos_weight", "class_weights")
            if getattr(self, name) is not None
        }
        return self.fn(logits, target, **weights, **self.kwargs)

    def extra_repr(self) -> str:
        return f"fn={self.fn.__name__}, kwargs={self.kwargs}"


LOSSES: dict[str, Callable[..., SegmentationLoss]] = {
    "bce": functools.partial(SegmentationLoss, bce_loss),
    "dice": functools.partial(SegmentationLoss, soft_dice_loss),
    "jaccard": functools.partial(SegmentationLoss, soft_jaccard_loss),
    "bce_dice": functools.partial(SegmentationLoss, bce_dice_loss),
    "ce": functools.partial(SegmentationLoss, ce_loss),
    "ce_dice": functools.partial(SegmentationLoss, ce_dice_loss),
}
BINARY_LOSSES = ("bce", "dice", "jaccard", "bce_dice")
MULTICLASS_LOSSES = ("ce", "dice", "ce_dice")


def default_loss(name: str, num_classes: int) -> str:
    """`name`, or for ``"auto"`` the loss of `num_classes` logit channels: ``bce_dice`` for one
    (binary), ``ce_dice`` for several."""
    if name != "auto":
        return name
    return "bce_dice" if num_classes == 1 else "ce_dice"


# Losses that take each weight; passing it to any other loss is an error, not silently dropped.
_TAKES = {"pos_weight": ("bce", "bce_dice"), "class_weights": ("ce", "ce_dice")}


def build_loss(
    name: str,
    *,
    num_classes: int,
    pos_weight: Weight | None = None,
    class_weights: Weight | None = None,
) -> SegmentationLoss:
    """Loss module ``name`` for a model with ``num_classes`` logit channels.

    Raises
    ------
    ValueError
        If ``name`` is not allowed for ``num_classes`` (1: ``BINARY_LOSSES``, >= 2:
        ``MULTICLASS_LOSSES``), or a weight is given to a loss that does not take it.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    allowed = BINARY_LOSSES if num_classes == 1 else MULTICLASS_LOSSES
    if name not in allowed:
        raise ValueError(f"loss {name!r} not allowed for num_classes={num_classes}; {allowed=}")
    weights = {"pos_weight": pos_weight, "class_weights": class_weights}
    for weight_name, value in weights.items():
        if value is not None and name not in _TAKES[weight_name]:
            raise ValueError(
                f"{weight_name} is only used by {_TAKES[weight_name]}, not by loss {name!r}"
            )
    given = {k: v for k, v in weights.items() if v is not None}
    return LOSSES[name](**given)
