"""Prefect tasks of the training stage: thin wrappers that add logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from segflow.tasks.train.member import MemberResult, train_member
from segflow.tasks.train.registration import open_training_run, register_model
from segflow.tasks.train.sampling import (
    Balance,
    prepare_balance,
)


@task(name="balance-classes", cache_policy=NO_CACHE)
def balance_classes(store: str, **options: Any) -> Balance:
    """Build and store the sampling plan (see :func:`prepare_balance`)."""
    result = prepare_balance(store, **options)
    get_run_logger().info(
        "class fractions: uniform patches %s, balanced patches %s",
        [round(f, 4) for f in result.fractions_before],
        [round(f, 4) for f in result.fractions_after],
    )
    return result


@task(name="train-model", cache_policy=NO_CACHE, task_run_name="train-member-{member}")
def train_model(balance: Balance, *, member: int, **options: Any) -> MemberResult:
    """Train one model (see :func:`train_member`)."""
    result = train_member(balance, member=member, **options)
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
    return result


@task(name="register-model", cache_policy=NO_CACHE)
def register(balance: Balance, members: list[MemberResult], **options: Any) -> str:
    """Log and register the model (see :func:`register_model`)."""
    uri = register_model(balance, members, **options)
    get_run_logger().info("model: %s", uri)
    return uri


@task(name="open-training-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_run(balance: Balance, **options: Any) -> tuple[str, Path]:
    """Start or reopen the MLflow run (see :func:`open_training_run`)."""
    run_id, folder = open_training_run(balance, **options)
    get_run_logger().info("MLflow run %s, checkpoints in %s", run_id, folder)
    return run_id, folder
