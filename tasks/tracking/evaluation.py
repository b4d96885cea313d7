"""The evaluation run in MLflow: nested under the model's training run, then the registry.

The evaluate stage prepares every value (names, tags, metrics, figure, table, panels); this
module only decides where the run goes and makes the MLflow calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric

from segflow.tasks.tracking.cards import append_test_scores
from segflow.tasks.tracking.registry import (
    ModelRef,
    Promotion,
    promote_if_better,
    record_test_score,
)
from segflow.tasks.tracking.runs import log_store_inputs, source_tags

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ARTIFACT_DIR = "evaluation"


@dataclass(frozen=True)
class EvaluationRun:
    """What an evaluation run records as values, and the score the registry keeps.

    Attributes
    ----------
    model
        The evaluated model: the run is nested under its training run (``model.run_id``), in
        that run's experiment; its registered version, if any, gets the test score.
    name
        Run name.
    tags, params, metrics
        Logged as they are.
    sweep
        Metric key -> step -> value, logged as the steps of one metric each.
    dice, key
        Test Dice tagged on the model version and compared for promotion, and what identifies
        the pixels it was measured on (see
        :func:`~segflow.tasks.tracking.registry.promote_if_better`).
    data
        (store path, content hash, split): the run's ``test`` dataset input.
    """

    model: ModelRef
    name: str
    tags: dict[str, str]
    params: dict[str, str | int | float | None]
    metrics: dict[str, float]
    sweep: dict[str, dict[int, float]]
    dice: float
    key: str
    data: tuple[str, str, str | None]


@dataclass(frozen=True)
class EvaluationArtifacts:
    """What an evaluation run stores as files under ``evaluation/``.

    Attributes
    ----------
    figure
        Saved as ``threshold_sweep.png``.
    table
        Rows with the same keys, at least one; saved as the MLflow table ``images.json``.
    report
        JSON-able; saved as ``report.json``.
    overlays
        File stem -> uint8 RGB panel ``(H, W, 3)``; each saved as ``<stem>.png``.
    """

    figure: Figure
    table: list[dict[str, Any]]
    report: dict[str, Any]
    overlays: dict[str, np.ndarray]


def log_evaluation_run(
    run: EvaluationRun,
    artifacts: EvaluationArtifacts,
    *,
    experiment: str,
    promote: bool,
    alias: str,
) -> tuple[str, Promotion | None]:
    """Record an evaluation as one MLflow run, tag the model version with its test score and,
    if `promote`, move `alias` to it when it beats the holder.

    The run is a child of ``run.model``'s training run (same experiment, shown nested in the
    MLflow UI); a model without a run is evaluated in `experiment`.

    Returns
    -------
    tuple[str, Promotion | None]
        The run id, and the promotion outcome (None unless `promote`).
    """
    tags = dict(run.tags)
    if run.model.run_id:
        tags["mlflow.parentRunId"] = run.model.run_id
        experiment_id = MlflowClient().get_run(run.model.run_id).info.experiment_id
    else:
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    tags |= source_tags()
    with mlflow.start_run(experiment_id=experiment_id, run_name=run.name, tags=tags) as active:
        store, fingerprint, split = run.data
        log_store_inputs(store, fingerprint, {"test": split})
        mlflow.log_params(run.params)
        mlflow.log_metrics(run.metrics)
        steps = [
            Metric(key, value, 0, step)
            for key, values in run.sweep.items()
            for step, value in values.items()
        ]
        MlflowClient().log_batch(active.info.run_id, metrics=steps)
        _log_artifacts(artifacts)
    record_test_score(run.model, run.dice, run.key)
    append_test_scores(run.model, active.info.run_id, run.metrics)
    promotion = promote_if_better(run.model, run.dice, run.key, alias) if promote else None
    return active.info.run_id, promotion


def _log_artifacts(artifacts: EvaluationArtifacts) -> None:
    """Log the files of an evaluation into the active run."""
    mlflow.log_figure(artifacts.figure, f"{ARTIFACT_DIR}/threshold_sweep.png")
    rows = artifacts.table
    columns = {column: [row[column] for row in rows] for column in rows[0]}
    mlflow.log_table(columns, f"{ARTIFACT_DIR}/images.json")
    mlflow.log_dict(artifacts.report, f"{ARTIFACT_DIR}/report.json")
    for stem, panel in artifacts.overlays.items():
        mlflow.log_image(panel, f"{ARTIFACT_DIR}/{stem}.png")
