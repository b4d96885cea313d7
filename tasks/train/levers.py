"""The balancing plan's levers: from a target foreground share and what sampling measurably
achieves to the sampling window, the share of foreground-centred draws and loss weights.

Sampling can only show the model the foreground an image has: centring a patch on a thin crack
or a small spot adds a few percent of foreground at most, and a patch that covers most of an
image is the image whatever its position. So the plan measures, for each candidate window, the
foreground share of uniformly placed patches (``uniform``) and of foreground-centred ones
(``centred``); a mix with a share ``o`` of centred draws has the share
``(1 - o) * uniform + o * centred`` (the draws are a mixture, so this is exact in expectation).
Levers, in order, until the target is met:

1. more foreground-centred draws, up to ``MAX_OVERSAMPLE`` (a third of the draws stays uniform,
   so the model still sees background far from any object);
2. a smaller sampling window, down to ``MIN_WINDOW``, with a batch as many times larger as it
   holds fewer pixels (multi-crop batches: the same pixels per step, more of them near
   foreground);
3. what sampling cannot reach, the loss weights do: the class's weight in BCE/CE is raised by
   the odds ratio ``odds(target) / odds(achieved)``, capped at ``weight_cap``.

Everything here is pure: the balance step measures the shares and records the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MAX_OVERSAMPLE = 0.67
MIN_WINDOW = 128


@dataclass(frozen=True)
class Shares:
    """Foreground share per class (index 0 is background) of patches of one window."""

    uniform: tuple[float, ...]  # patches at uniform positions (per-sample weights applied)
    centred: tuple[float, ...]  # patches centred on a foreground pixel

    def mixed(self, oversample: float) -> np.ndarray:
        """Shares when a share `oversample` of the draws is foreground-centred."""
        return (1 - oversample) * np.asarray(self.uniform) + oversample * np.asarray(self.centred)


@dataclass(frozen=True)
class Levers:
    """What the plan does to meet its target, and why (logged to MLflow and the flow run)."""

    target: float  # foreground share per class the plan aims at
    natural: tuple[float, ...]  # class shares (all classes) of uniformly drawn patches
    achieved: tuple[float, ...]  # class shares of the patches the plan draws (measured)
    window: int  # side of the sampled patches
    batch_factor: int  # batch (and patches per epoch) multiplied by this for a smaller window
    fg_oversample: float
    loss_weights: tuple[float, ...] | None  # per class, background 1; None: unweighted
    levers: tuple[str, ...]  # "oversample", "window", "loss weights"; empty: none needed
    reasons: tuple[str, ...]  # one sentence per decision

    def params(self) -> dict[str, str]:
        """Flat MLflow params ``balance.*``."""
        weights = "none" if self.loss_weights is None else _join(self.loss_weights, ".2f")
        return {
            "balance.target": f"{self.target:.4f}",
            "balance.natural": _join(self.natural, ".4f"),
            "balance.achieved": _join(self.achieved, ".4f"),
            "balance.window": str(self.window),
            "balance.batch_factor": str(self.batch_factor),
            "balance.fg_oversample": f"{self.fg_oversample:.2f}",
            "balance.loss_weights": weights,
            "balance.levers": ",".join(self.levers) or "none",
        }

    def markdown(self, class_names: Sequence[str]) -> str:
        """The plan as a markdown table per class and the reasons, for the Prefect UI and
        MLflow."""
        lines = [
            f"Target: {self.target:.1%} of the pixels the model sees, per foreground class; "
            f"windows {self.window}², batch x{self.batch_factor}, "
            f"{self.fg_oversample:.0%} of draws centred on foreground.",
            "",
            "| class | in the data | sampled | loss weight |",
            "|---|---|---|---|",
        ]
        weights = self.loss_weights or (1.0,) * len(self.natural)
        for name, natural, achieved, weight in zip(
            class_names, self.natural, self.achieved, weights, strict=True
        ):
            lines.append(f"| {name} | {natural:.2%} | {achieved:.2%} | {weight:.2f} |")
        levers = ", ".join(self.levers) or "none"
        return "\n".join([*lines, "", f"Levers: {levers}.", "", *(f"- {r}" for r in self.reasons)])

    def line(self) -> str:
        """One line for a log: the target, what sampling reached and the levers."""
        rarest = min(range(1, len(self.natural)), key=lambda c: self.natural[c], default=0)
        return (
            f"balancing: target {self.target:.1%}, rarest class {self.natural[rarest]:.2%} in "
            f"the data -> {self.achieved[rarest]:.2%} sampled; levers: "
            f"{', '.join(self.levers) or 'none'}"
        )


def _join(values: Sequence[float], spec: str) -> str:
    return ",".join(format(v, spec) for v in values)


def windows(patch_size: int, multiple: int) -> list[int]:
    """Candidate sampling windows: `patch_size`, then halved while >= ``MIN_WINDOW`` and a
    multiple of `multiple` (the network's total down-sampling)."""
    sizes = [patch_size]
    while sizes[-1] // 2 >= MIN_WINDOW and (sizes[-1] // 2) % multiple == 0:
        sizes.append(sizes[-1] // 2)
    return sizes


def _needed(shares: Shares, target: float, classes: Sequence[int]) -> float:
    """The share of centred draws that brings every class in `classes` to `target` (inf
    where centring cannot)."""
    need = 0.0
    for c in classes:
        uniform, centred = shares.uniform[c], shares.centred[c]
        if uniform >= target:
            continue
        need = max(need, (target - uniform) / (centred - uniform) if centred > uniform else np.inf)
    return need


def _as_set(
    measure: Callable[[int], Shares],
    natural: Sequence[float],
    classes: Sequence[int],
    target: float,
    patch_size: int,
    fg_oversample: float,
) -> Levers:
    """No lever: the data meets the target (or there is none); sampling as set."""
    reason = (
        f"foreground already {min(natural[c] for c in classes):.2%} >= target {target:.2%}"
        if classes and target > 0
        else "no target: sampling as set"
    )
    achieved = tuple(measure(patch_size).mixed(fg_oversample).tolist())
    return Levers(
        target, tuple(natural), achieved, patch_size, 1, fg_oversample, None, (), (reason,)
    )


def _loss_weights(
    achieved: np.ndarray, rare: Sequence[int], target: float, cap: float
) -> tuple[list[float] | None, str | None]:
    """Per-class loss weights that make up what sampling leaves short of `target` (odds ratio,
    capped), and why; (None, None) when sampling reaches it."""
    short = [c for c in rare if achieved[c] < target]
    if not short:
        return None, None
    weights = [1.0] * len(achieved)
    for c in short:
        weights[c] = float(min(cap, _odds(target) / _odds(achieved[c])))
    reached = ", ".join(f"class {c} {achieved[c]:.2%} (weight {weights[c]:.2f})" for c in short)
    return (
        weights,
        f"sampling reaches {reached} of the {target:.0%} target; the loss weights make up the rest",
    )


def choose_levers(
    measure: Callable[[int], Shares],
    natural: Sequence[float],
    fg_classes: Sequence[int],
    *,
    target: float,
    patch_size: int,
    multiple: int,
    fg_oversample: float,
    weight_cap: float,
) -> Levers:
    """The levers for the `fg_classes` of a store whose classes have `natural` shares (index 0
    background); `measure(window)` probes the store. With ``target <= 0``, sampling stays as
    set (`fg_oversample`, no lever); loss weights are per store class.
    """
    classes = [c for c in fg_classes if natural[c] > 0]
    rare = [c for c in classes if natural[c] < target]
    if target <= 0 or not rare:
        return _as_set(measure, natural, classes, target, patch_size, fg_oversample)
    reasons, levers, probed = [], [], {}
    for window in windows(patch_size, multiple):
        shares = probed[window] = measure(window)
        need = _needed(shares, target, rare)
        if need <= MAX_OVERSAMPLE:
            break
    oversample = float(min(MAX_OVERSAMPLE, max(fg_oversample, need)))
    achieved = shares.mixed(oversample)
    if oversample > fg_oversample:
        levers.append("oversample")
        reasons.append(
            f"{oversample:.0%} of draws centred on foreground (set: {fg_oversample:.0%}) "
            f"raise the rarest class from {min(shares.mixed(fg_oversample)[rare]):.2%} "
            f"to {min(achieved[rare]):.2%}"
        )
    if window < patch_size:
        levers.append("window")
        reasons.append(
            f"{window}² windows instead of {patch_size}²: a {patch_size}² patch centred on "
            f"foreground holds only {min(probed[patch_size].centred[c] for c in rare):.2%} of it"
        )
    weights, why = _loss_weights(achieved, rare, target, weight_cap)
    if weights is not None:
        levers.append("loss weights")
        reasons.append(why)
    return Levers(
        target,
        tuple(natural),
        tuple(achieved.tolist()),
        window,
        (patch_size // window) ** 2,
        oversample,
        None if weights is None else tuple(weights),
        tuple(levers),
        tuple(reasons),
    )


def _odds(share: float) -> float:
    share = min(max(share, 1e-6), 1 - 1e-6)
    return share / (1 - share)
