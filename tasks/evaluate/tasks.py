"""Prefect tasks of the evaluation stage: thin wrappers that add logging."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from segflow.tasks.evaluate.blocks import Evaluation, evaluate
from segflow.tasks.evaluate.plan import Plan, plan_evaluation
from segflow.tasks.evaluate.report import log_evaluation
from segflow.tasks.tracking.registry import (
    Promotion,
)


@task(name="plan-evaluation", cache_policy=NO_CACHE)
def plan(predictions: str, store: str, split: str | None) -> Plan:
    """Check the predictions cover the split (see :func:`plan_evaluation`)."""
    result = plan_evaluation(predictions, store, split)
    get_run_logger().info("%d images, %d blocks to evaluate", len(result.names), len(result.jobs))
    return result


@task(name="score-blocks", cache_policy=NO_CACHE)
def score(plan: Plan, **options: Any) -> Evaluation:
    """Tally every block and score (see :func:`segflow.tasks.evaluate.blocks.evaluate`)."""
    logger = get_run_logger()
    result = evaluate(plan, log=logger.info, **options)
    pooled = result.pooled
    logger.info(
        "pooled over %d pixels: Dice %.4f, IoU %.4f, BCE %.4f",
        pooled.pixels,
        pooled.dice,
        pooled.iou,
        pooled.bce,
    )
    return result


@task(name="log-evaluation", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log(evaluation: Evaluation, **options: Any) -> tuple[str, Promotion | None]:
    """Record the evaluation in MLflow (see :func:`log_evaluation`)."""
    run_id, promotion = log_evaluation(evaluation, **options)
    logger = get_run_logger()
    logger.info("MLflow evaluation run %s", run_id)
    if promotion is not None:
        logger.info("promotion: %s (%s)", promotion.promoted, promotion.reason)
    return run_id, promotion
