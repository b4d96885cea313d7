"""An evaluation as data: JSON report, per-image table, threshold-sweep figure, overlay
thumbnails, and the records of it that :mod:`segflow.tasks.tracking.evaluation` logs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from segflow.tasks.evaluate.blocks import Evaluation
from segflow.tasks.evaluate.plan import Plan, evaluation_key
from segflow.tasks.evaluate.scoring import THRESHOLDS
from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from segflow.tasks.storage.urls import open_group
from segflow.tasks.tracking.evaluation import (
    EvaluationArtifacts,
    EvaluationRun,
    log_evaluation_run,
)
from segflow.tasks.tracking.overlays import overlay
from segflow.tasks.tracking.registry import ModelRef, Promotion

_METRICS = ("bce", "dice", "iou", "precision", "recall")


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
        "threshold": _threshold(plan),
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


def thumbnail(
    plan: Plan, name: str, max_side: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strided (image ``(C, h, w)``, truth ``(h, w)``, predicted mask ``(h, w)``) of one image,
    at most `max_side` per side; truth and mask are class ids in the prediction's space."""
    dataset = open_dataset(plan.store)
    truth = dataset.mask(name)
    step = max(1, -(-max(truth.shape) // max_side))
    view = np.s_[::step, ::step]
    image = np.asarray(dataset.image(name)[(slice(None), *view)])
    mask = open_group(plan.predictions, name, mode="r")["labels/mask/0"]
    return (
        image,
        plan.layout.truth_ids(np.asarray(truth[view])),
        np.asarray(mask[(0, *view)]),
    )


def overlay_panels(evaluation: Evaluation, count: int) -> dict[str, np.ndarray]:
    """Image | truth | prediction panels (uint8 RGB) of the `count` lowest- and highest-Dice
    images, keyed ``worst_<image>`` and ``best_<image>``."""
    ranked = sorted(evaluation.images, key=lambda n: evaluation.images[n].dice)
    picks = {f"worst_{n}": n for n in ranked[:count]}
    picks |= {f"best_{n}": n for n in ranked[::-1][:count]}
    return {
        label: overlay(*thumbnail(evaluation.plan, name), label) for label, name in picks.items()
    }


def evaluation_run(evaluation: Evaluation, flow_run_id: str | None) -> EvaluationRun:
    """The MLflow run of `evaluation`: named ``evaluate-<split>-<model name>/<version>``,
    metrics ``<split>/<metric>`` and ``<split>/<metric>.<class>``, the sweep as steps 1..99
    (threshold x 100) of ``<split>/sweep_dice.<class>``; the baselines as params
    ``trivial_dice.<predictor>``. Reads the dataset store's fingerprint."""
    plan = evaluation.plan
    model = ModelRef(**plan.meta["model"]) if plan.meta.get("model") else ModelRef("?", None)
    fingerprint = dataset_fingerprint(open_dataset(plan.store))
    prefix = plan.split or "all"
    tags = {
        "segflow.stage": "evaluate",
        "segflow.predictions": str(Path(plan.predictions).resolve()),
        "segflow.store": str(Path(plan.store).resolve()),
        "segflow.dataset_sha256": fingerprint,
        "segflow.model_uri": model.uri,
        "prefect.flow_run_id": flow_run_id or "",
    }
    model_label = f"{model.name}/{model.version}" if model.version else Path(model.uri).name
    if model.version:
        tags["segflow.model_version"] = model_label
    pooled = evaluation.pooled
    metrics = {f"{prefix}/{m}": getattr(pooled, m) for m in _METRICS}
    for name, values in pooled.per_class.items():
        metrics |= {f"{prefix}/{m}.{_key(name)}": v for m, v in values.items()}
    trivial = {f"trivial_dice.{_key(k)}": round(v, 6) for k, v in pooled.trivial_dice.items()}
    sweep = {
        f"{prefix}/sweep_dice.{_key(name)}": {
            round(t * 100): d for t, d in zip(THRESHOLDS, dice, strict=True)
        }
        for name, dice in evaluation.sweep.items()
    }
    return EvaluationRun(
        model=model,
        name=f"evaluate-{prefix}-{model_label}",
        tags=tags,
        params={"split": prefix, "images": len(plan.names), "threshold": _threshold(plan)}
        | trivial,
        metrics=metrics,
        sweep=sweep,
        dice=pooled.dice,
        key=evaluation_key(fingerprint, plan.split),
        data=(str(Path(plan.store).resolve()), fingerprint, plan.split),
    )


def evaluation_artifacts(evaluation: Evaluation, overlays: int) -> EvaluationArtifacts:
    """The files of the MLflow run: sweep figure, per-image table, report and `overlays` best
    and worst overlay panels each."""
    return EvaluationArtifacts(
        figure=sweep_figure(evaluation, _threshold(evaluation.plan)),
        table=per_image_table(evaluation),
        report=report(evaluation),
        overlays=overlay_panels(evaluation, overlays),
    )


def log_evaluation(
    evaluation: Evaluation,
    *,
    experiment: str,
    flow_run_id: str | None,
    promote: bool,
    alias: str,
    overlays: int,
) -> tuple[str, Promotion | None]:
    """Record `evaluation` in MLflow next to the model's training run (see
    :func:`segflow.tasks.tracking.evaluation.log_evaluation_run`); returns (evaluation run id,
    promotion outcome, None unless `promote`)."""
    return log_evaluation_run(
        evaluation_run(evaluation, flow_run_id),
        evaluation_artifacts(evaluation, overlays),
        experiment=experiment,
        promote=promote,
        alias=alias,
    )


def _threshold(plan: Plan) -> float | None:
    """The probability threshold the predicted masks were made with."""
    return plan.meta.get("settings", {}).get("threshold")


def _key(name: str) -> str:
    """A class name as an MLflow metric key part."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
