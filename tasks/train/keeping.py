"""Which weights a member contributes: of its checkpoints (best val Dice, last epoch, the
moving average of the weights), never ones that do no better than a trivial predictor (every
pixel one class) on validation when another does better; and the binary threshold with the
best val Dice of the weights kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.checkpoints import kept_weights, load_checkpoint
from segflow.tasks.train.loop import FitResult, LoopSettings, resolve_compute
from segflow.tasks.train.validation import ValidationScores, trivial_baseline, validate


@dataclass(frozen=True)
class Kept:
    """The weights a member contributes and how they compare with the trivial predictors."""

    weights: str  # best | last | ema
    val_dice: float
    learned: bool
    trivial_dice: dict[str, float]  # trivial predictor -> its val Dice, on the same tiles
    threshold: float  # binary: the threshold with the best val Dice (0.5 for multi-class)
    threshold_dice: float  # the val Dice at `threshold`
    candidates: dict[str, float]  # each checkpoint considered (best, last, ema) -> its val Dice

    @property
    def trivial(self) -> str:
        """The best trivial predictor."""
        return max(self.trivial_dice, key=self.trivial_dice.__getitem__)


def keep_learned(
    preferred: str, val_dice: Mapping[str, float], baseline: float
) -> tuple[str, bool]:
    """The checkpoint a member contributes, and whether it has learned.

    `preferred` (what ``weights`` picks, see ``kept_weights``) if its val Dice beats `baseline`
    (the best trivial predictor's) strictly; else, of the other checkpoints that do, the one
    with the best val Dice; else `preferred`, not learned. `val_dice` maps each checkpoint
    (``best``, ``last`` and ``ema`` when there is one) to its val Dice; NaN (unknown) never
    beats the baseline.

    Raises
    ------
    ValueError
        `preferred` is not in `val_dice`.
    """
    if preferred not in val_dice:
        raise ValueError(f"no {preferred!r} checkpoint to keep; there are {sorted(val_dice)}")
    if val_dice[preferred] > baseline:
        return preferred, True
    others = [w for w, dice in val_dice.items() if w != preferred and dice > baseline]
    if others:
        return max(others, key=val_dice.__getitem__), True
    return preferred, False


def keep_member_weights(
    model: nn.Module,
    folder: Path,
    result: FitResult,
    weights: str,
    balance: Balance,
    loop: LoopSettings,
) -> Kept:
    """Load into `model` the weights a member trained in `folder` contributes (``weights``:
    auto, best, last or ema; see :func:`keep_learned`) and return their outcome.

    ``best`` and ``last`` have the val Dice `result` reports; ``folder/ema.pt`` (absent after
    resuming a finished run of an earlier version) is validated here on the same tiles.
    """
    trivial = member_baseline(balance, loop)
    val_dice = {"best": result.best_dice, "last": result.last_dice}
    scores: dict[str, ValidationScores] = {}
    if (folder / "ema.pt").exists():
        model.load_state_dict(load_checkpoint(folder / "ema.pt")["model"])
        scores["ema"] = member_scores(model, balance, loop)
        val_dice["ema"] = scores["ema"].dice
    preferred = kept_weights(weights, result.stopped)
    kept, learned = keep_learned(preferred, val_dice, max(trivial.values()))
    model.load_state_dict(load_checkpoint(folder / f"{kept}.pt")["model"])
    kept_scores = scores[kept] if kept in scores else member_scores(model, balance, loop)
    threshold = kept_scores.best_threshold()
    return Kept(kept, val_dice[kept], learned, trivial, *threshold, val_dice)


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


def member_scores(model: nn.Module, balance: Balance, loop: LoopSettings) -> ValidationScores:
    """The validation scores of `model` on the tiles validation scores during training."""
    return validate(
        model,
        open_dataset(balance.store),
        balance.val_ids,
        balance.normalization,
        tile=loop.val_tile,
        amp_dtype=resolve_compute(loop).amp_dtype,
        max_tiles=loop.val_max_tiles,
        binary_class=balance.binary_class,
    )
