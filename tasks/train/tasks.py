"""Prefect tasks of the training stage: thin wrappers, named as the functions they wrap, that
add logging (and retries where MLflow is reached)."""

from __future__ import annotations

from logging import Logger, LoggerAdapter

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from segflow.models.unet import UNetConfig
from segflow.tasks.train import balance, budget, ensemble, probe, registration, training_run
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.budget import BudgetPlan, BudgetSettings, Patches
from segflow.tasks.train.ensemble import MemberResult, MemberSettings, shortfall
from segflow.tasks.train.loop import EpochReport
from segflow.tasks.train.registration import Registered
from segflow.tasks.train.sampling import SamplingSettings
from segflow.tasks.train.training_run import RunSettings, TrainingRun


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_line(report: EpochReport, member: int) -> str:
    """One epoch for a log, e.g. ``member 0 epoch 3/20: loss 0.4123, val Dice 0.6512 (best),
    9.1 patches/s, 12 s/epoch, ~3 min left``."""
    best = " (best)" if report.best else ""
    line = (
        f"member {member} epoch {report.epoch + 1}/{report.epochs}: loss {report.train_loss:.4f}, "
        f"val Dice {report.scores.dice:.4f}{best}, {report.patches_per_second:.1f} patches/s, "
        f"{_duration(report.wall_seconds)}/epoch"
    )
    return f"{line}, ~{_duration(report.seconds_left)} left" if report.done < 1 else line


@task(name="balance-classes", cache_policy=NO_CACHE)
def balance_classes(store: str, settings: SamplingSettings) -> Balance:
    """Build and store the sampling plan (:func:`balance.balance_classes`)."""
    result = balance.balance_classes(store, settings)
    logger = get_run_logger()
    logger.info("%s", result.levers.line())
    for reason in result.levers.reasons:
        logger.info("  %s", reason)
    markdown = f"# Balancing plan\n\n{result.levers.markdown(result.class_names)}"
    create_markdown_artifact(markdown, key="balance-plan")
    return result


@task(name="plan-patches", cache_policy=NO_CACHE)
def plan_patches(store: str, settings: BudgetSettings) -> Patches:
    """Fingerprint the store and size the patches (:func:`budget.plan_patches`)."""
    result = budget.plan_patches(store, settings)
    logger = get_run_logger()
    logger.info("%s", result.fingerprint.line())
    for reason in result.reasons:
        logger.info("  %s", reason)
    return result


@task(name="plan-budget", cache_policy=NO_CACHE)
def plan_budget(
    balance: Balance, sizes: Patches, settings: BudgetSettings, members: MemberSettings
) -> BudgetPlan:
    """Probe the training speed and plan the schedule (:func:`budget.plan_budget`)."""
    logger = get_run_logger()
    logger.info(
        "probing the training speed: %d warm-up steps and %.0f s of steps of %d patches of "
        "%d², one validation, checkpoint and overlay snapshot",
        probe.WARMUP_STEPS,
        probe.PROBE_SECONDS,
        members.loop.batch_size,
        balance.plan.patch_size,
    )
    result = budget.plan_budget(balance, sizes, settings, members)
    logger.info("%s", result.line())
    create_markdown_artifact(f"# Budget plan\n\n{result.markdown()}", key="budget-plan")
    return result


@task(name="open-training-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def open_training_run(
    balance: Balance,
    settings: RunSettings,
    flow_run_id: str | None,
    plan: BudgetPlan | None = None,
) -> TrainingRun:
    """Start or reopen the MLflow run (:func:`training_run.open_training_run`)."""
    run = training_run.open_training_run(balance, settings, flow_run_id, plan)
    get_run_logger().info("MLflow run %s, checkpoints in %s", run.run_id, run.folder)
    return run


class EpochProgress:
    """Follows a member's epochs: one log line each, and a progress artifact (the share of the
    epochs, or of the time budget) advanced in steps of at least 5 %, as each update is an API
    call."""

    STEP = 5.0  # percent

    def __init__(self, member: int, logger: Logger | LoggerAdapter) -> None:
        self.member, self.logger, self.percent = member, logger, 0.0
        self.artifact = create_progress_artifact(
            0.0, key=f"train-member-{member}", description=f"Training member {member}"
        )

    def __call__(self, report: EpochReport) -> None:
        self.logger.info("%s", epoch_line(report, self.member))
        percent = round(100 * report.done, 1)
        if percent >= min(100.0, self.percent + self.STEP):
            self.advance(percent)

    def advance(self, percent: float) -> None:
        """Show `percent`; the end (100) is shown even when early stopping came first."""
        if percent != self.percent:
            update_progress_artifact(self.artifact, percent)
            self.percent = percent


@task(name="train-model", cache_policy=NO_CACHE, task_run_name="train-member-{member}")
def train_model(
    balance: Balance, member: int, run: TrainingRun, settings: MemberSettings
) -> MemberResult:
    """Train one ensemble member (:func:`ensemble.train_model`), logging each epoch."""
    progress = EpochProgress(member, get_run_logger())
    result = ensemble.train_model(balance, member, run, settings, on_epoch=progress)
    progress.advance(100.0)
    get_run_logger().info(
        "member %d: best val Dice %.4f at epoch %d (%d epochs, stopped by %s); kept the %s "
        "weights (val Dice %.4f)",
        member,
        result.best_dice,
        result.best_epoch + 1,
        result.epochs_done,
        result.stopped,
        result.kept,
        result.val_dice,
    )
    if not result.learned:
        get_run_logger().warning("member %d has not learned: %s", member, shortfall(result))
    return result


@task(name="register-model", cache_policy=NO_CACHE)
def register_model(
    balance: Balance,
    members: list[MemberResult],
    run: TrainingRun,
    unet: UNetConfig,
    registered_name: str | None,
    alias_unlearned: bool,
) -> Registered:
    """Log and register the model (:func:`registration.register_model`); a WARNING when it did
    not learn."""
    result = registration.register_model(
        balance, members, run, unet, registered_name, alias_unlearned
    )
    logger = get_run_logger()
    given = f"with the alias {result.alias}" if result.alias else "without an alias"
    logger.info("model: %s, %s", result.uri, given)
    if result.warning:
        logger.warning("%s; registered as %s %s", result.warning, result.uri, given)
    return result
