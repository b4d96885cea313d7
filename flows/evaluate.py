"""The ``evaluate-predictions`` flow: score predictions against the truth, log to MLflow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from segflow.flows.config import EvaluateConfig
from segflow.flows.runs import evaluate_labels, named_by
from segflow.flows.summaries import evaluate_markdown
from segflow.tasks.evaluate.blocks import default_evaluation_workers
from segflow.tasks.evaluate.report import per_image_table, report
from segflow.tasks.evaluate.tasks import log_evaluation, plan_evaluation, score_blocks
from segflow.tasks.runtime.cluster import default_workers
from segflow.tasks.storage.urls import use_options
from segflow.tasks.tracking.runs import configure_tracking


class EvaluateSummary(BaseModel):
    """What an evaluation found; ``segflow evaluate --json`` prints it."""

    run_id: str
    report: dict
    promotion: dict | None


@flow(
    name="evaluate-predictions",
    validate_parameters=True,
    flow_run_name=named_by(evaluate_labels, EvaluateConfig),
)
def evaluate_predictions(config: EvaluateConfig) -> EvaluateSummary:
    """Score ``config.predictions`` against the masks of ``config.store`` chunk by chunk, log
    the result to MLflow (next to the model's training run) and to the Prefect UI, and
    optionally promote the model to the champion alias."""
    use_options(config.storage_options)
    tracking_uri = configure_tracking(Path(config.workdir), config.experiment)
    plan = plan_evaluation(config.predictions, config.store, config.split)
    evaluation = score_blocks(
        plan,
        workers=config.workers or default_evaluation_workers(plan, default_workers()),
        dask_address=config.dask_address,
    )
    run_id, promotion = log_evaluation(
        evaluation,
        experiment=config.experiment,
        flow_run_id=flow_run.get_id(),
        promote=config.promote,
        alias=config.champion_alias,
        overlays=config.overlays,
    )
    create_table_artifact(
        per_image_table(evaluation),
        key="evaluation-per-image",
        description=f"Per-image scores of {config.predictions} ({config.split or 'all'})",
    )
    create_markdown_artifact(
        evaluate_markdown(evaluation, run_id, promotion, tracking_uri), key="evaluation-summary"
    )
    return EvaluateSummary(
        run_id=run_id,
        report=report(evaluation),
        promotion=None if promotion is None else asdict(promotion),
    )
