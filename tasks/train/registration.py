"""The trained model's registration: one bundle of the members' weights, logged to MLflow.

A model some member of which has not learned (see :mod:`segflow.tasks.train.ensemble`) is still
logged and registered, so it can be inspected, but without the :data:`NEWEST` alias unless the
user asks for it; its tag and description say why.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segflow.models.unet import UNetConfig
from segflow.tasks.storage.bundle import save_bundle
from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from segflow.tasks.tracking.cards import ModelCard
from segflow.tasks.tracking.training import Verdict, log_trained_model
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.checkpoints import load_checkpoint
from segflow.tasks.train.ensemble import MemberResult, shortfall
from segflow.tasks.train.training_run import TrainingRun

# The alias a new model version gets: what `segflow infer` predicts with by default.
NEWEST = "newest"


@dataclass(frozen=True)
class Registered:
    """The logged model: its URI, whether it learned, and the alias it was given."""

    uri: str
    learned: bool
    warning: str | None  # why it did not learn, for the terminal and the flow run
    alias: str | None


def unlearned_reason(members: Sequence[MemberResult]) -> str | None:
    """Why the model has not learned (which members did no better than a trivial predictor on
    validation, and by how much), or None when every member learned."""
    failed = [m for m in members if not m.learned]
    if not failed:
        return None
    many = len(members) > 1
    return "; ".join((f"member {m.member}: " if many else "") + shortfall(m) for m in failed)


def model_verdict(members: Sequence[MemberResult], alias_unlearned: bool) -> Verdict:
    """Learned when every member beat the trivial predictors on validation; then, or when
    `alias_unlearned`, the new version gets :data:`NEWEST`. The description says why."""
    reason = unlearned_reason(members)
    if reason is None:
        dice = ", ".join(f"{m.val_dice:.4f}" for m in members)
        best = members[0].trivial.replace("_", " ", 1)
        trivial = members[0].trivial_dice
        return Verdict(
            True, f"learned: val Dice {dice} > {trivial:.4f} of predicting {best}", NEWEST
        )
    if alias_unlearned:
        note = f"given the alias '{NEWEST}' as asked (alias_unlearned)"
    else:
        note = f"not given the alias '{NEWEST}' (alias_unlearned gives it)"
    alias = NEWEST if alias_unlearned else None
    return Verdict(False, f"did not learn: {reason} on the validation tiles; {note}", alias)


def model_threshold(members: Sequence[MemberResult]) -> float:
    """The bundle's binary threshold: the members' val-chosen ones, averaged (the ensemble
    averages their probabilities)."""
    return round(float(np.mean([m.threshold for m in members])), 2)


def model_card(
    balance: Balance, members: Sequence[MemberResult], unet: UNetConfig, verdict: Verdict
) -> ModelCard:
    """The model card of the registered version: data, classes, settings, val scores."""
    store = open_dataset(balance.store)
    scores = {f"member {m.member} ({m.kept} weights)": m.val_dice for m in members}
    if len(members) > 1:
        scores["mean"] = float(np.mean([m.val_dice for m in members]))
    return ModelCard(
        store=str(Path(balance.store).resolve()),
        digest=dataset_fingerprint(store),
        classes=balance.class_names,
        settings={
            "U-Net": f"base {unet.base_channels}, depth {unet.depth}",
            "members": len(members),
            "epochs done": ", ".join(str(m.epochs_done) for m in members),
            "best epoch": ", ".join(str(m.best_epoch + 1) for m in members),
            "train samples": len(balance.train_ids),
            "sampling window": balance.plan.patch_size,
            "balancing": balance.levers.line().removeprefix("balancing: "),
            "threshold": _threshold_note(members, balance.binary_class is not None),
        },
        val_scores=scores,
        trivial={members[0].trivial.replace("_", " ", 1): members[0].trivial_dice},
        verdict=verdict.description,
    )


def _threshold_note(members: Sequence[MemberResult], binary: bool) -> str:
    """How the threshold was chosen, e.g. ``0.43, chosen on val (Dice 0.7120; 0.7010 at 0.5)``."""
    if not binary:
        return "argmax over classes"
    at = ", ".join(f"{m.threshold_dice:.4f}" for m in members)
    at_half = ", ".join(f"{m.val_dice:.4f}" for m in members)
    return f"{model_threshold(members)}, chosen on val (Dice {at}; {at_half} at 0.5)"


def register_model(
    balance: Balance,
    members: list[MemberResult],
    run: TrainingRun,
    unet: UNetConfig,
    registered_name: str | None,
    alias_unlearned: bool,
) -> Registered:
    """Bundle the members' kept weights, log the bundle to `run` and register it under
    `registered_name` (None: log only) with the alias :func:`model_verdict` gives."""
    states = [load_checkpoint(Path(m.checkpoint))["model"] for m in members]
    val_dice = [m.val_dice for m in members]
    verdict = model_verdict(members, alias_unlearned)
    summary = {
        "val_dice": float(np.mean(val_dice)),
        "val_trivial_dice": members[0].trivial_dice,  # one val set for every member
        "val_threshold": model_threshold(members),
    }
    card = model_card(balance, members, unet, verdict)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = save_bundle(
            Path(tmp) / "bundle",
            config=unet,
            state_dicts=states,
            mean=balance.normalization.mean,
            std=balance.normalization.std,
            class_names=balance.class_names,
            metadata={
                "binary_class": balance.binary_class,
                "store": str(Path(balance.store).resolve()),
                "member_val_dice": val_dice,
                "threshold": model_threshold(members),
            },
        )
        uri = log_trained_model(
            run.run_id,
            bundle,
            in_channels=unet.in_channels,
            out_channels=balance.out_channels,
            registered_name=registered_name,
            summary=summary,
            verdict=verdict,
            card=card,
        )
    reason = unlearned_reason(members)
    warning = None if reason is None else f"the model did not learn: {reason}"
    return Registered(uri, verdict.learned, warning, verdict.alias if registered_name else None)
