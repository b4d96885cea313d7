"""Planning the training to a time budget: patch and batch from the store's fingerprint, then
epochs x patches per epoch from the speed measured on the device, so that the schedule ends
when the budget does.

nnU-Net plans from a dataset fingerprint and a GPU memory target; the target here is the
wall-clock budget of a member's training loop, on any device. The plan sets only the
:data:`PLANNED` settings the user left free, starting from their configured values:

- **patch**: the configured side, at most the median train image's shorter side (a larger
  patch holds mirrored copies of the image), at least ``STRUCTURE_SPAN`` times the median
  object width (an object with its surroundings), a multiple of ``2**depth``;
- **batch**: for a smaller patch, as many times the configured batch as the patch holds fewer
  pixels, so a step sees the same pixels (on the project CPU 64² patches ran at half the pixel
  rate in batches of 8 as in batches of 128), at most 5 % of the train pixels per step
  (nnU-Net's cap) and never below the configured batch; for a larger patch, as many times
  fewer patches, at least ``MIN_BATCH``;
- **schedule**: the probe (:mod:`segflow.tasks.train.probe`) measures r configured patches/s,
  V seconds of validation and checkpoints per epoch and s seconds per overlay snapshot, taken
  after n(E) of E epochs; its own time comes out of the budget (at most ``MAX_PROBE_SHARE`` of
  it), leaving the loop's budget L. E epochs of P patches then last
  ``D = E (P / r + V) + n(E) s``, and the plan solves ``D = L x (1 + HEADROOM)`` for what is
  free: E from epochs of the configured size, at most as many as keep validation under
  ``MAX_OVERHEAD`` of the budget, then P from E, rounded up to whole batches. It aims a little
  past the budget because the two errors differ: a schedule that ends early leaves the budget
  unused, one that runs over is ended at the deadline by the loop, whose learning rate already
  follows the clock;
- **base channels** (only with the schedule free): where that schedule gives fewer than
  ``MIN_STEPS`` optimiser steps, a U-Net of half the base channels (a quarter of the compute)
  is probed and planned instead, down to ``MIN_BASE``, kept only where it plans more steps;
  every probe comes out of the budget, and no further one starts once they took half of
  ``MAX_PROBE_SHARE``. On the AVX2 project machine, fp32,
  10 minutes on ISBI (benchmarks/README.md, "Quality at equal time"): base 32 was planned to
  ~70 steps and scored test Dice 0.764 ± 0.014, base 16 planned here ran ~220 steps and
  scored 0.796 ± 0.003 (3 seeds each); where base 32 got ~640 steps (HRF, a CPU with native
  bf16) it matched the reference loop.

One module for the whole plan (its size, over 300 lines, is that): each step starts from what
the one before set, and the plan record, its log line and artifact name every step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from segflow.tasks.train.balance import Balance
from segflow.tasks.train.ensemble import MemberSettings, overlay_epochs
from segflow.tasks.train.fingerprint import Fingerprint, fingerprint_store
from segflow.tasks.train.probe import Throughput, measure_throughput

PLANNED = ("epochs", "patches_per_epoch", "patch_size", "batch_size", "base_channels")
STRUCTURE_SPAN = 4
MIN_PATCH, MIN_BATCH = 16, 2
DATASET_SHARE = 0.05
MAX_OVERHEAD = 0.1
HEADROOM = 0.05
MAX_PROBE_SHARE = 0.5
MIN_STEPS, MIN_BASE = 250, 16


@dataclass(frozen=True)
class BudgetSettings:
    """What the plan fills and starts from (built by ``TrainConfig.budget()``)."""

    seconds: float  # the time budget of each member's training loop
    free: frozenset[str]  # the PLANNED settings the user left to the plan
    epochs: int  # the configured values: the starting point, or fixed when not free
    patches_per_epoch: int
    patch_size: int
    batch_size: int
    base_channels: int
    max_epochs: int  # the most epochs and the largest batch the config accepts
    max_batch: int
    multiple: int  # 2**depth: a patch side is a multiple of it
    nproc: int  # a batch splits over this many ranks: a multiple of it


@dataclass(frozen=True)
class Patches:
    """The patch and batch the fingerprint allows (the first half of the plan)."""

    patch_size: int
    batch_size: int
    fingerprint: Fingerprint
    reasons: tuple[str, ...]

    def settings(self) -> dict[str, int]:
        return {"patch_size": self.patch_size, "batch_size": self.batch_size}


@dataclass(frozen=True)
class BudgetPlan:
    """The plan: the settings it sets, what they rest on and why (stored with the run)."""

    seconds: float  # the budget
    loop_seconds: float  # the training loop's: the budget less the probe's time
    epochs: int
    patches_per_epoch: int
    patch_size: int
    batch_size: int
    base_channels: int | None  # None in plans stored before it was planned
    planned: tuple[str, ...]  # the settings taken from the plan; the others were given
    patches_per_second: float  # of patch_size patches, measured (all ranks)
    epoch_overhead: float  # validation and checkpoints per epoch, s
    snapshot_seconds: float  # one overlay snapshot, s
    predicted_seconds: float  # the schedule's duration at the measured speed
    probe_seconds: float
    device: str  # e.g. "cpu bf16"
    image_side: int
    structure_width: float
    reasons: tuple[str, ...]

    @property
    def steps(self) -> int:
        """Optimiser steps of the schedule (the loader drops a last partial batch)."""
        return self.epochs * (self.patches_per_epoch // self.batch_size)

    def settings(self) -> dict[str, int]:
        """The PLANNED settings (the config keeps those the user gave)."""
        return {n: getattr(self, n) for n in PLANNED if getattr(self, n) is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists, not tuples): the same in the run folder and checkpoints."""
        return {**asdict(self), "planned": list(self.planned), "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetPlan:
        listed = {"planned": tuple(data["planned"]), "reasons": tuple(data["reasons"])}
        # A plan stored before the probe's time came out of the budget gave the loop all of it.
        earlier = {"loop_seconds": data["seconds"], "base_channels": None}
        return cls(**{**earlier, **data, **listed})

    def params(self) -> dict[str, str]:
        """Flat MLflow params ``plan.*``."""
        values = {k: v for k, v in self.to_dict().items() if k != "reasons" and v is not None}
        values["planned"] = ",".join(self.planned) or "none"
        return {f"plan.{k}": _text(v) for k, v in values.items()}

    def line(self) -> str:
        """One line for a log, e.g. ``plan: U-Net base 32, 19 epochs x 248 patches of 256²,
        batch 8 for the 600 s budget (8.8 patches/s on cpu bf16, 3.1 s validation per epoch)``."""
        base = "" if self.base_channels is None else f"U-Net base {self.base_channels}, "
        return (
            f"plan: {base}{self.epochs} epochs x {self.patches_per_epoch} patches of "
            f"{self.patch_size}², batch {self.batch_size} for the {self.seconds:.0f} s budget "
            f"({self.patches_per_second:.1f} patches/s on {self.device}, "
            f"{self.epoch_overhead:.1f} s validation per epoch, probe {self.probe_seconds:.0f} s; "
            f"predicted {self.predicted_seconds:.0f} s)"
        )

    def markdown(self) -> str:
        """The plan as a markdown table and the reasons, for the Prefect UI and MLflow."""
        given = [n for n in PLANNED if n not in self.planned]
        rows = [
            f"| {n} | {getattr(self, n)} | {'plan' if n in self.planned else 'given'} |"
            for n in PLANNED
            if getattr(self, n) is not None  # a plan stored before the setting was planned
        ]
        head = (
            f"Budget {self.seconds:.0f} s per member on {self.device}: probe "
            f"{self.probe_seconds:.1f} s, training loop {self.loop_seconds:.0f} s (predicted "
            f"{self.predicted_seconds:.0f} s)."
        )
        table = ["| setting | value | from |", "|---|---|---|", *rows]
        given = f"Given: {', '.join(given) or 'none'}."
        return "\n".join([head, "", *table, "", given, "", *(f"- {r}" for r in self.reasons)])


def _text(value: Any) -> str:
    """A param value: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple)) * multiple


def _patch(fingerprint: Fingerprint, budget: BudgetSettings) -> tuple[int, str]:
    m, configured, side = budget.multiple, budget.patch_size, fingerprint.image_side
    least = _round_up(max(MIN_PATCH, STRUCTURE_SPAN * fingerprint.structure_width), m)
    most = max(_round_up(MIN_PATCH, m), side // m * m)
    patch = min(most, max(least, _round_up(configured, m)))
    objects = f"objects {fingerprint.structure_width:.0f} px wide"
    if patch < configured:
        return patch, f"{patch}² patches, not {configured}²: the images are {side} px ({objects})"
    if patch > configured:
        return patch, f"{patch}² patches, not {configured}²: {STRUCTURE_SPAN} x the {objects}"
    return patch, f"{patch}² patches as configured (images {side} px, {objects})"


def _batch(patch: int, fingerprint: Fingerprint, budget: BudgetSettings) -> tuple[int, str]:
    configured = budget.batch_size
    same_pixels = configured * budget.patch_size**2 // patch**2
    if patch <= budget.patch_size:
        cap = int(DATASET_SHARE * fingerprint.train_pixels / patch**2)
        batch = max(configured, min(same_pixels, cap, budget.max_batch))
    else:
        batch = max(MIN_BATCH, same_pixels)
    batch = max(budget.nproc, batch // budget.nproc * budget.nproc)
    if batch == configured:
        return batch, f"batch {batch} as configured"
    return batch, (
        f"batch {batch}, not {configured}: about the pixels of {configured} x "
        f"{budget.patch_size}² per step, at most {DATASET_SHARE:.0%} of the train pixels"
    )


def size_patches(fingerprint: Fingerprint, budget: BudgetSettings) -> Patches:
    """The patch side and batch for the store of `fingerprint`; a setting the user gave stays
    (see the module docstring)."""
    patch, batch, reasons = budget.patch_size, budget.batch_size, []
    if "patch_size" in budget.free:
        patch, why = _patch(fingerprint, budget)
        reasons.append(why)
    if "batch_size" in budget.free:
        batch, why = _batch(patch, fingerprint, budget)
        reasons.append(why)
    return Patches(patch, batch, fingerprint, tuple(reasons))


def plan_patches(store_path: str, budget: BudgetSettings) -> Patches:
    """:func:`size_patches` for the store at `store_path` (:func:`fingerprint_store`)."""
    return size_patches(fingerprint_store(store_path), budget)


def duration(epochs: int, patches: int, rate: float, overhead: float, snapshot: float) -> float:
    """Seconds `epochs` epochs of `patches` patches last at `rate` patches/s, with `overhead`
    seconds per epoch and `snapshot` seconds at each overlay epoch."""
    return epochs * (patches / rate + overhead) + len(overlay_epochs(epochs)) * snapshot


def loop_budget(seconds: float, probe_seconds: float) -> float:
    """The training loop's share of a budget of `seconds` after a probe of `probe_seconds`."""
    return max(seconds - probe_seconds, (1 - MAX_PROBE_SHARE) * seconds)


def _schedule(
    budget: BudgetSettings, loop: float, batch: int, rate: float, overhead: float, snapshot: float
) -> tuple[int, int]:
    """(epochs, patches per epoch) filling ``loop * (1 + HEADROOM)`` seconds."""
    target = loop * (1 + HEADROOM)
    free = budget.free

    def room(epochs: int) -> float:  # the time left for the epochs
        return target - len(overlay_epochs(epochs)) * snapshot

    def patches(epochs: int) -> int:
        return max(batch, _round_up(rate * (room(epochs) / epochs - overhead), batch))

    if "patches_per_epoch" not in free and "epochs" not in free:
        return budget.epochs, budget.patches_per_epoch
    if "epochs" not in free:
        return budget.epochs, patches(budget.epochs)
    epoch = budget.patches_per_epoch / rate + overhead
    if "patches_per_epoch" not in free:  # whole epochs past the budget: the deadline ends it
        guess = max(1, math.ceil(target / epoch))
        epochs = max(1, math.ceil(room(guess) / epoch))
        return min(budget.max_epochs, epochs), budget.patches_per_epoch
    epochs = max(1, round(room(max(1, round(target / epoch))) / epoch))
    if overhead > 0:
        epochs = min(epochs, max(1, math.floor(MAX_OVERHEAD * room(epochs) / overhead)))
    epochs = min(budget.max_epochs, epochs)
    return epochs, patches(epochs)


def plan_schedule(
    budget: BudgetSettings,
    sizes: Patches,
    measured: Throughput,
    batch_factor: int,
    *,
    base_channels: int | None = None,
    probed: float = 0.0,
) -> BudgetPlan:
    """The plan for `sizes` at the `measured` speed of the training windows, `batch_factor`
    of which make one configured patch (the balancing plan's smaller windows), for a U-Net of
    `base_channels` (the configured one by default), after earlier probes of `probed` seconds.

    With several ranks on CUDA the plan counts on one GPU per rank running as fast as the
    probe's; on the CPU the ranks share the cores, as fast as one process.
    """
    rate = measured.patches_per_second / batch_factor
    if measured.device.startswith("cuda"):
        rate *= budget.nproc
    overhead = measured.validation_seconds + measured.checkpoint_seconds
    probe_seconds = probed + measured.seconds
    loop = loop_budget(budget.seconds, probe_seconds)
    epochs, patches = _schedule(
        budget, loop, sizes.batch_size, rate, overhead, measured.snapshot_seconds
    )
    predicted = duration(epochs, patches, rate, overhead, measured.snapshot_seconds)
    filled = (
        f"{epochs} epochs x {patches} patches: {predicted:.0f} s at {rate:.1f} patches/s, "
        f"{overhead:.1f} s of validation and checkpoints per epoch and "
        f"{len(overlay_epochs(epochs))} overlay snapshots of {measured.snapshot_seconds:.1f} s, "
        f"for the {loop:.0f} s the {probe_seconds:.0f} s of probing left of the "
        f"{budget.seconds:.0f} s budget (the loop ends the last epoch at the deadline)"
    )
    return BudgetPlan(
        seconds=budget.seconds,
        loop_seconds=loop,
        epochs=epochs,
        patches_per_epoch=patches,
        patch_size=sizes.patch_size,
        batch_size=sizes.batch_size,
        base_channels=budget.base_channels if base_channels is None else base_channels,
        planned=tuple(n for n in PLANNED if n in budget.free),
        patches_per_second=rate,
        epoch_overhead=overhead,
        snapshot_seconds=measured.snapshot_seconds,
        predicted_seconds=predicted,
        probe_seconds=probe_seconds,
        device=measured.device,
        image_side=sizes.fingerprint.image_side,
        structure_width=sizes.fingerprint.structure_width,
        reasons=(*sizes.reasons, filled),
    )


def plan_budget(
    balance: Balance, sizes: Patches, budget: BudgetSettings, members: MemberSettings
) -> BudgetPlan:
    """Measure the members' training on their device (:func:`measure_throughput`) and plan the
    schedule that fills the budget (:func:`plan_schedule`); `members` trains with `sizes`.

    Where base channels and the schedule are free and it has fewer than ``MIN_STEPS`` steps,
    half the base is probed and planned, down to ``MIN_BASE``, while the probes stay within
    half of ``MAX_PROBE_SHARE`` of the budget; it is kept only when it plans more steps."""
    factor, unet = balance.levers.batch_factor, members.unet
    measured = measure_throughput(balance, members)
    plan = plan_schedule(budget, sizes, measured, factor, base_channels=unet.base_channels)
    may_halve = "base_channels" in budget.free and {"epochs", "patches_per_epoch"} & budget.free
    halved: list[str] = []
    while (
        may_halve
        and plan.steps < MIN_STEPS
        and unet.base_channels > MIN_BASE
        and plan.probe_seconds < MAX_PROBE_SHARE * budget.seconds / 2
    ):
        smaller = replace(unet, base_channels=max(MIN_BASE, unet.base_channels // 2))
        probed = measure_throughput(balance, replace(members, unet=smaller))
        spent = plan.probe_seconds
        candidate = plan_schedule(
            budget, sizes, probed, factor, base_channels=smaller.base_channels, probed=spent
        )
        if candidate.steps <= plan.steps:  # not faster here: the larger one, less its budget
            plan = plan_schedule(
                budget,
                sizes,
                measured,
                factor,
                base_channels=unet.base_channels,
                probed=probed.seconds + spent - measured.seconds,
            )
            break
        halved.append(
            f"U-Net base {smaller.base_channels}, not {unet.base_channels}: {plan.steps} "
            f"optimiser steps of base {unet.base_channels} fit the budget, fewer than "
            f"{MIN_STEPS}; {candidate.steps} of base {smaller.base_channels}"
        )
        unet, measured, plan = smaller, probed, candidate
    return replace(plan, reasons=(*plan.reasons[:-1], *halved, plan.reasons[-1]))
