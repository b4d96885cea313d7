"""Prefect tasks of the evaluation stage: thin wrappers that add logging, and retries on the
MLflow calls."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from segflow.tasks.evaluate import blocks, plan, report
from segflow.tasks.evaluate.blocks import Evaluation
from segflow.tasks.evaluate.plan import Plan
from segflow.tasks.tracking.registry import Promotion


@task(name="plan-evaluation", cache_policy=NO_CACHE)
def plan_evaluation(predictions: str, store: str, split: str | None) -> Plan:
    """Check the predictions cover the split (:func:`~.plan.plan_evaluation`)."""
    result = plan.plan_evaluation(predictions, store, split)
    get_run_logger().info("%d images, %d blocks to evaluate", len(result.names), len(result.jobs))
    return result


@task(name="score-blocks", cache_policy=NO_CACHE)
def score_blocks(plan: Plan, *, workers: int, dask_address: str | None) -> Evaluation:
    """Tally every block and score (:func:`~.blocks.score_blocks`)."""
    logger = get_run_logger()
    result = blocks.score_blocks(plan, workers=workers, dask_address=dask_address, log=logger.info)
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
def log_evaluation(
    evaluation: Evaluation,
    *,
    experiment: str,
    flow_run_id: str | None,
    promote: bool,
    alias: str,
    overlays: int,
) -> tuple[str, Promotion | None]:
    """Record the evaluation in MLflow (:func:`~.report.log_evaluation`)."""
    run_id, promotion = report.log_evaluation(
        evaluation,
        experiment=experiment,
        flow_run_id=flow_run_id,
        promote=promote,
        alias=alias,
        overlays=overlays,
    )
    logger = get_run_logger()
    logger.info("MLflow evaluation run %s", run_id)
    if promotion is not None:
        logger.info("promotion: %s (%s)", promotion.promoted, promotion.reason)
    return run_id, promotion
