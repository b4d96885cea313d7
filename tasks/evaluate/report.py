"""An evaluation as JSON, a per-image table, a threshold-sweep plot and MLflow records."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import zarr
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric

from segflow.tasks.evaluate.blocks import Evaluation
from segflow.tasks.evaluate.plan import Plan, evaluation_key
from segflow.tasks.evaluate.scoring import THRESHOLDS
from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from segflow.tasks.storage.paths import local_path
from segflow.tasks.tracking.overlays import overlay
from segflow.tasks.tracking.registry import (
    ModelRef,
    Promotion,
    promote_if_better,
    record_test_score,
)


def report(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation as plain JSON-able data (what ``--json`` prints)."""
    plan = evaluation.plan
    return {
        "predictions": plan.predictions,
        "store": plan.store,
        "split": plan.split,
        "model_uri": plan.meta.get("model_uri"),
        "images": len(plan.names),
        "pooled": asdict(evaluation.pooled),
        "per_image": {name: asdict(s) for name, s in evaluation.images.items()},
        "threshold_sweep": {"thresholds": THRESHOLDS.tolist(), "dice": evaluation.sweep},
        "threshold": plan.meta.get("settings", {}).get("threshold"),
    }


def per_image_table(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per image: pixels and the pooled scores of its pixels."""
    return [
        {
            "image": name,
            "pixels": s.pixels,
            "dice": round(s.dice, 4),
            "iou": round(s.iou, 4),
            "bce": round(s.bce, 4),
            "precision": round(s.precision, 4),
            "recall": round(s.recall, 4),
        }
        for name, s in evaluation.images.items()
    ]


def sweep_figure(evaluation: Evaluation, threshold: float | None) -> Figure:
    """Dice against threshold per foreground class, with the threshold used marked."""
    figure = Figure(figsize=(5, 3.5), dpi=100)  # no pyplot: no GUI backend, no global state
    axes = figure.subplots()
    for name, dice in evaluation.sweep.items():
        best = int(np.argmax(dice))
        axes.plot(
            THRESHOLDS, dice, label=f"{name} (best {dice[best]:.3f} at {THRESHOLDS[best]:.2f})"
        )
    if threshold is not None:
        axes.axvline(threshold, color="grey", linestyle="--", label=f"used {threshold}")
    axes.set(xlabel="threshold", ylabel="Dice", xlim=(0, 1), title="Dice vs threshold")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def log_evaluation(
    evaluation: Evaluation,
    *,
    experiment: str,
    flow_run_id: str | None,
    promote: bool,
    alias: str,
    overlays: int,
) -> tuple[str, Promotion | None]:
    """Record the evaluation in MLflow; returns (evaluation run id, promotion outcome).

    The run is created as a child of the model's training run (same experiment, shown nested
    in the MLflow UI) when the predictions name a tracked model. A registered model version
    gets its test Dice as tags, which is what the `alias` promotion compares.
    """
    plan = evaluation.plan
    ref = ModelRef(**plan.meta["model"]) if plan.meta.get("model") else ModelRef("?", None)
    fingerprint = dataset_fingerprint(open_dataset(plan.store))
    key = evaluation_key(fingerprint, plan.split)
    prefix = plan.split or "all"
    tags = {
        "segflow.stage": "evaluate",
        "segflow.predictions": str(Path(plan.predictions).resolve()),
        "segflow.store": str(Path(plan.store).resolve()),
        "segflow.dataset_sha256": fingerprint,
        "segflow.model_uri": ref.uri,
        "prefect.flow_run_id": flow_run_id or "",
    }
    if ref.version:
        tags["segflow.model_version"] = f"{ref.name}/{ref.version}"
    if ref.run_id:
        tags["mlflow.parentRunId"] = ref.run_id
        experiment_id = MlflowClient().get_run(ref.run_id).info.experiment_id
    else:
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    pooled = evaluation.pooled
    threshold = plan.meta.get("settings", {}).get("threshold")
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"evaluate-{prefix}", tags=tags
    ) as run:
        mlflow.log_params({"split": prefix, "images": len(plan.names), "threshold": threshold})
        metrics = {
            f"{prefix}.{m}": getattr(pooled, m)
            for m in ("bce", "dice", "iou", "precision", "recall")
        }
        for name, values in pooled.per_class.items():
            metrics |= {f"{prefix}.{m}.{_key(name)}": v for m, v in values.items()}
        mlflow.log_metrics(metrics)
        sweep = [
            Metric(f"{prefix}.sweep_dice.{_key(name)}", d, 0, round(t * 100))
            for name, dice in evaluation.sweep.items()
            for t, d in zip(THRESHOLDS, dice, strict=True)
        ]
        MlflowClient().log_batch(run.info.run_id, metrics=sweep)
        figure = sweep_figure(evaluation, threshold)
        mlflow.log_figure(figure, "evaluation/threshold_sweep.png")
        table = per_image_table(evaluation)
        mlflow.log_table({k: [row[k] for row in table] for k in table[0]}, "evaluation/images.json")
        mlflow.log_dict(report(evaluation), "evaluation/report.json")
        ranked = sorted(evaluation.images, key=lambda n: evaluation.images[n].dice)
        picks = {f"worst_{n}": n for n in ranked[:overlays]}
        picks |= {f"best_{n}": n for n in ranked[::-1][:overlays]}
        for label, name in picks.items():
            mlflow.log_image(overlay(*thumbnail(plan, name)), f"evaluation/{label}.png")
    record_test_score(ref, pooled.dice, key)
    promotion = promote_if_better(ref, pooled.dice, key, alias) if promote else None
    return run.info.run_id, promotion


def _key(name: str) -> str:
    """A class name as an MLflow metric key part."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def thumbnail(plan: Plan, name: str, max_side: int = 512) -> tuple[np.ndarray, ...]:
    """Strided (image, truth, predicted mask) of one image, at most `max_side` per side."""
    dataset = open_dataset(plan.store)
    truth = dataset.mask(name)
    step = max(1, -(-max(truth.shape) // max_side))
    view = np.s_[::step, ::step]
    image = np.asarray(dataset.image(name)[(slice(None), *view)])
    mask = zarr.open_group(local_path(plan.predictions) / name, mode="r")["labels/mask/0"]
    return (
        image,
        plan.layout.truth_ids(np.asarray(truth[view])),
        np.asarray(mask[(0, *view)]),
    )
