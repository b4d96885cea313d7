"""The ``train-unet`` flow: balance classes, train the U-Net (or an ensemble), register it.

Run as a module, it is every rank's entry under torchrun (:func:`torchrun_main`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ValidationError

from segflow.flows.config import TrainConfig
from segflow.flows.runs import named_by, train_labels
from segflow.flows.summaries import train_markdown
from segflow.tasks.runtime.locks import hold
from segflow.tasks.storage.urls import use_options
from segflow.tasks.tracking.runs import tracking_uri
from segflow.tasks.train import balance as balancing
from segflow.tasks.train import budget as budgeting
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.budget import BudgetPlan, BudgetSettings, Patches
from segflow.tasks.train.distributed import current_ranks
from segflow.tasks.train.distributed_launch import (
    backend,
    join_group,
    leave_group,
    release,
    serve,
)
from segflow.tasks.train.ensemble import MemberSettings
from segflow.tasks.train.sampling import SamplingSettings
from segflow.tasks.train.tasks import (
    balance_classes,
    open_training_run,
    plan_budget,
    plan_patches,
    register_model,
    train_model,
)
from segflow.tasks.train.training_run import run_folder, stored_plan


class TrainSummary(BaseModel):
    """What a training run produced.

    ``trivial`` is the trivial predictor (``all_background``, ``all_foreground``,
    ``all_<class>``) with the best val Dice, ``trivial_dice`` that Dice on the same tiles;
    ``learned`` is False when some member did no better (``warning`` says which), and then
    ``alias`` is None unless ``alias_unlearned`` was set.
    """

    run_id: str
    model_uri: str
    val_dice: float
    members: list[dict]
    class_fractions_uniform: list[float]
    class_fractions_balanced: list[float]
    balancing: str  # the plan's target, what sampling reached and the levers
    plan: str | None = None  # the budget plan's line; None without --max-minutes
    trivial: str | None = None
    trivial_dice: float | None = None
    learned: bool = True
    warning: str | None = None
    alias: str | None = None


def writer_lock(config: TrainConfig) -> AbstractContextManager[Path]:
    """The writer lock of the training run folder, held for the whole flow.

    The CLI takes it first (it is re-entrant), so a second writer fails at once, before
    Prefect starts.
    """
    return hold(run_folder(config.training_run()))


@flow(
    name="train-unet",
    validate_parameters=True,
    flow_run_name=named_by(train_labels, TrainConfig),
)
def train_unet(config: TrainConfig) -> TrainSummary:
    """Train a U-Net on ``config.store`` and register it in MLflow.

    Steps: with ``max_minutes``, the budget plan's patch and batch (from the store) -> the
    balance step (sampling plan, stored with the dataset) -> with ``max_minutes``, the budget
    plan's schedule (from a speed probe) -> one training task per ensemble member
    (checkpoints every epoch; ``resume`` continues them, with the plan they started with) ->
    model registration.
    The run folder's writer lock is held throughout, and the store's while the sampling plan is
    written: a second writer of either fails (``LockHeld``).
    """
    use_options(config.storage_options)
    with writer_lock(config):
        return _train(config)


@dataclass(frozen=True)
class PlanningSteps:
    """The steps :func:`plan_training` calls: the flow's tasks (:data:`TASK_STEPS`) or the pure
    functions under them (:data:`PURE_STEPS`, for a benchmark outside Prefect)."""

    plan_patches: Callable[[str, BudgetSettings], Patches]
    balance_classes: Callable[[str, SamplingSettings], Balance]
    plan_budget: Callable[[Balance, Patches, BudgetSettings, MemberSettings], BudgetPlan]


TASK_STEPS = PlanningSteps(plan_patches, balance_classes, plan_budget)
PURE_STEPS = PlanningSteps(budgeting.plan_patches, balancing.balance_classes, budgeting.plan_budget)


def plan_training(
    config: TrainConfig, steps: PlanningSteps = TASK_STEPS
) -> tuple[TrainConfig, Balance, BudgetPlan | None]:
    """The balance step, and with a time budget the plan that fills it: `config` with the
    plan's settings (those the user did not give), the balance and the plan."""
    settings = config.budget()
    stored = None if settings is None else stored_plan(config.training_run())
    if settings is None or stored is not None:  # no budget, or a resume keeps its plan
        plan = None if stored is None else BudgetPlan.from_dict(stored)
        config = config if plan is None else config.planned(plan.settings())
        return config, steps.balance_classes(config.store, config.sampling()), plan
    sizes = steps.plan_patches(config.store, settings)
    config = config.planned(sizes.settings())
    balanced = steps.balance_classes(config.store, config.sampling())
    unet = config.unet(balanced.in_channels, balanced.out_channels)
    members = config.members(unet, balanced.levers.batch_factor)
    plan = steps.plan_budget(balanced, sizes, settings, members)
    return config.planned(plan.settings()), balanced, plan


def _train(config: TrainConfig) -> TrainSummary:
    config, balance, plan = plan_training(config)
    config = config.with_loss_for(balance.out_channels)
    run = open_training_run(balance, config.training_run(), flow_run.get_id(), plan)
    settings = config.members(
        config.unet(balance.in_channels, balance.out_channels),
        balance.levers.batch_factor,
        None if plan is None else plan.to_dict(),
    )
    members = [train_model(balance, k, run, settings) for k in range(config.ensemble)]
    registered = register_model(
        balance, members, run, settings.unet, config.registered_model, config.alias_unlearned
    )
    summary = TrainSummary(
        run_id=run.run_id,
        model_uri=registered.uri,
        val_dice=sum(m.val_dice for m in members) / len(members),
        members=[m.__dict__ for m in members],
        class_fractions_uniform=balance.fractions_before,
        class_fractions_balanced=balance.fractions_after,
        balancing=balance.levers.line(),
        plan=None if plan is None else plan.line(),
        trivial=members[0].trivial,
        trivial_dice=members[0].trivial_dice,
        learned=registered.learned,
        warning=registered.warning,
        alias=registered.alias,
    )
    create_markdown_artifact(train_markdown(summary, tracking_uri()), key="train-summary")
    return summary


def torchrun_main(argv: Sequence[str]) -> int:
    """Every rank's entry under torchrun: ``torchrun [--nnodes ...] --nproc-per-node N -m
    segflow.flows.train STORE [options]``.

    Rank 0 runs ``segflow train STORE [options] --nproc WORLD_SIZE`` (balancing, the flow,
    MLflow, registration); the other ranks train the share of each member rank 0 sends them.
    Returns the exit status: rank 0's command's, 0 on the other ranks.
    """
    from segflow.flows.cli import build_parser  # the CLI imports this module: import late
    from segflow.flows.cli import main as cli_main
    from segflow.flows.options import config_from_options

    if "WORLD_SIZE" not in os.environ:
        print("error: start it with torchrun (see segflow train --nproc)", file=sys.stderr)
        return 2
    args = ["train", *argv, "--nproc", os.environ["WORLD_SIZE"]]
    try:
        device = config_from_options(TrainConfig, build_parser().parse_args(args)).device
    except ValidationError:
        device = "cpu"  # rank 0's command reports the mistake
    join_group(backend(device))
    leader, status = current_ranks().leader, 1
    try:
        if leader:
            status = cli_main(args)
        else:
            serve()
            status = 0
        return status
    finally:
        if leader:
            try:
                release()
            except RuntimeError:  # a rank died: torchrun's agent ends the others
                status = 1
        leave_group(failed=status != 0)


if __name__ == "__main__":
    sys.exit(torchrun_main(sys.argv[1:]))
