"""Which weights a member contributes: never ones that do no better than a trivial predictor
(every pixel one class) on validation when its other checkpoint does better; and the binary
threshold with the best val Dice of the weights kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.loop import LoopSettings, resolve_compute
from segflow.tasks.train.validation import trivial_baseline, validate


@dataclass(frozen=True)
class Kept:
    """The weights a member contributes and how they compare with the trivial predictors."""

    weights: str  # best | last
    val_dice: float
    learned: bool
    trivial_dice: dict[str, float]  # trivial predictor -> its val Dice, on the same tiles
    threshold: float  # binary: the threshold with the best val Dice (0.5 for multi-class)
    threshold_dice: float  # the val Dice at `threshold`

    @property
    def trivial(self) -> str:
        """The best trivial predictor."""
        return max(self.trivial_dice, key=self.trivial_dice.__getitem__)


def keep_learned(
    preferred: str, val_dice: Mapping[str, float], baseline: float
) -> tuple[str, bool]:
    """The checkpoint a member contributes, and whether it has learned.

    `preferred` (what ``weights`` picks, see ``kept_weights``) if its val Dice beats `baseline`
    (the best trivial predictor's) strictly; else the other of ``best``/``last`` if that one
    does; else `preferred`, not learned. `val_dice` maps ``best`` and ``last`` to their val Dice.
    """
    other = "last" if preferred == "best" else "best"
    for weights in (preferred, other):
        if val_dice[weights] > baseline:
            return weights, True
    return preferred, False


def member_baseline(balance: Balance, loop: LoopSettings) -> dict[str, float]:
    """Val Dice of each trivial predictor on the tiles validation scores: ``all_background``
    and ``all_foreground`` for a binary model, else ``all_<class name>`` per class."""
    dice = trivial_baseline(
        open_dataset(balance.store),
        balance.val_ids,
        tile=loop.val_tile,
        max_tiles=loop.val_max_tiles,
        num_classes=max(2, balance.out_channels),
        binary_class=balance.binary_class,
    )
    binary = balance.binary_class is not None
    names = ("background", "foreground") if binary else balance.class_names
    return {f"all_{name}": d for name, d in zip(names, dice, strict=True)}


def member_threshold(model: nn.Module, balance: Balance, loop: LoopSettings) -> tuple[float, float]:
    """The threshold with the best val Dice of `model` (binary; 0.5 for multi-class) and that
    Dice, on the tiles validation scores."""
    scores = validate(
        model,
        open_dataset(balance.store),
        balance.val_ids,
        balance.normalization,
        tile=loop.val_tile,
        amp_dtype=resolve_compute(loop).amp_dtype,
        max_tiles=loop.val_max_tiles,
        binary_class=balance.binary_class,
    )
    return scores.best_threshold()
