"""The flows' summaries as text: plain lines for the terminal (the CLI prints them) and markdown
for the Prefect UI (the flows publish them as artifacts).

Every function returns a string and prints nothing. The summary models are imported for type
checking only, because the flows that define them import their markdown from here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Where the UIs the summaries point to listen (`make mlflow-ui`, `make prefect-ui`).
MLFLOW_PORT = 5000
PREFECT_PORT = 4200

if TYPE_CHECKING:
    from segflow.flows.evaluate import EvaluateSummary
    from segflow.flows.infer import InferSummary
    from segflow.flows.ingest import IngestSummary
    from segflow.flows.pipeline import PipelineSummary
    from segflow.flows.train import TrainSummary
    from segflow.tasks.evaluate.blocks import Evaluation
    from segflow.tasks.tracking.registry import Promotion


def mlflow_link(tracking_uri: str, run_id: str) -> str:
    """Markdown for the MLflow run `run_id`: a link to its page on an MLflow server, or for a
    local store (no web page) the command that serves it and the page it then has."""
    from segflow.tasks.tracking.runs import run_page  # mlflow loads slowly: only when linking

    if tracking_uri.startswith(("http://", "https://")):
        return f"[MLflow run `{run_id}`]({run_page(tracking_uri, run_id)})"
    serve = (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {tracking_uri} "
        f"--host 127.0.0.1 --port {MLFLOW_PORT} --workers 1"
    )
    return (
        f"MLflow run `{run_id}` (tracking store `{tracking_uri}`, no web page of its own): "
        f"start `{serve}`, then open {run_page(f'http://127.0.0.1:{MLFLOW_PORT}', run_id)}"
    )


def ingest_text(summary: IngestSummary) -> str:
    """The ingest summary for the terminal: store, counts, split, class fractions, rejections."""
    fractions = zip(summary.class_names, summary.class_fractions, strict=True)
    origin = "" if summary.split_source == "fractions" else f" (from {summary.split_source})"
    lines = [
        f"store      {summary.store}",
        f"samples    {summary.samples} ({summary.written} written, {summary.unchanged} unchanged)",
        "split      " + ", ".join(f"{k} {v}" for k, v in summary.split.items()) + origin,
        "classes    " + ", ".join(f"{name} {fraction:.2%}" for name, fraction in fractions),
        f"rejected   {len(summary.rejected)}",
    ]
    lines += [f"  {item['path']}: {item['reason']}" for item in summary.rejected]
    return "\n".join(lines)


def ingest_markdown(summary: IngestSummary) -> str:
    """The ingest summary for the Prefect UI: counts, a class table and a rejection table."""
    lines = [
        f"# Ingest into `{summary.store}`",
        "",
        f"{summary.samples} samples stored ({summary.written} written, {summary.unchanged} "
        f"unchanged); {len(summary.rejected)} inputs rejected; split from {summary.split_source}.",
        "",
        "| split | samples |",
        "|---|---|",
    ]
    lines += [f"| {name} | {count} |" for name, count in summary.split.items()]
    lines += ["", "| class | pixel fraction |", "|---|---|"]
    fractions = zip(summary.class_names, summary.class_fractions, strict=True)
    lines += [f"| {name} | {fraction:.4f} |" for name, fraction in fractions]
    if summary.rejected:
        lines += ["", "| rejected input | reason |", "|---|---|"]
        lines += [f"| `{r['path']}` | {r['reason']} |" for r in summary.rejected]
    return "\n".join(lines)


def _trivial(summary: TrainSummary) -> str:
    """``(predicting all foreground: 0.1234)`` after a space, or nothing without a baseline."""
    if summary.trivial is None:
        return ""
    return f" (predicting {summary.trivial.replace('_', ' ', 1)}: {summary.trivial_dice:.4f})"


def train_text(summary: TrainSummary, workdir: str | Path) -> str:
    """The training summary for the terminal; `workdir` holds the run's MLflow database. A
    model that did not learn ends with a warning line."""
    model = f"model      {summary.model_uri}"
    if not summary.learned and summary.alias is None and summary.model_uri.startswith("models:/"):
        model += "  (no alias `newest`: --alias-unlearned gives it)"
    lines = [
        model,
        f"MLflow run {summary.run_id}  (mlflow ui --backend-store-uri "
        f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'})",
        f"val Dice   {summary.val_dice:.4f} {_trivial(summary)}".rstrip(),
        summary.balancing,
        *([summary.plan] if summary.plan else []),
    ]
    if summary.warning:
        lines.append(f"warning: {summary.warning}")
    return "\n".join(lines)


def train_markdown(summary: TrainSummary, tracking_uri: str) -> str:
    """The training summary for the Prefect UI, linked to its MLflow run, with a warning when
    the model did not learn."""
    lines = [
        f"# Trained `{summary.model_uri}`",
        "",
        f"{mlflow_link(tracking_uri, summary.run_id)}.",
        "",
        f"Val Dice {summary.val_dice:.4f} over "
        f"{len(summary.members)} member(s){_trivial(summary)}; "
        + (f"alias `{summary.alias}`." if summary.alias else "no alias."),
        "",
        f"{summary.balancing.capitalize()} (artifact `balance-plan`).",
    ]
    if summary.plan:
        lines += ["", f"{summary.plan.capitalize()} (artifact `budget-plan`)."]
    if summary.warning:
        lines += ["", f"**Warning: {summary.warning}.**"]
    return "\n".join(lines)


def infer_text(summary: InferSummary) -> str:
    """The inference summary for the terminal, with every failed and rejected image."""
    lines = [
        f"predictions {summary.output}  ({summary.images} images, model {summary.model})",
        f"blocks      {summary.blocks_predicted} predicted, "
        f"{summary.blocks_already_done} already done",
    ]
    lines += [f"  failed {name}: {reason}" for name, reason in summary.failed.items()]
    lines += [f"  rejected {path}: {reason}" for path, reason in summary.rejected]
    lines.append(f"view        napari --plugin napari-ome-zarr {summary.output}/<image>")
    return "\n".join(lines)


def evaluate_text(summary: EvaluateSummary) -> str:
    """The evaluation for the terminal: pooled and per-class scores, the best threshold per
    class, the MLflow run and the promotion outcome (if one was attempted)."""
    report = summary.report
    pooled = report["pooled"]
    metrics = ("dice", "iou", "bce", "precision", "recall")
    trivial = pooled["trivial_dice"].items()
    lines = [
        f"evaluated  {report['images']} images of split {report['split']}",
        "pooled     " + ", ".join(f"{m} {pooled[m]:.4f}" for m in metrics),
        "trivial    " + ", ".join(f"{k.replace('_', ' ', 1)} dice {v:.4f}" for k, v in trivial),
    ]
    lines += [
        f"  {name:<16} Dice {values['dice']:.4f}  IoU {values['iou']:.4f}"
        for name, values in pooled["per_class"].items()
    ]
    thresholds = report["threshold_sweep"]["thresholds"]
    for name, dice in report["threshold_sweep"]["dice"].items():
        best = max(range(len(dice)), key=dice.__getitem__)
        lines.append(f"best threshold for {name}: {thresholds[best]:.2f} (Dice {dice[best]:.4f})")
    lines.append(f"MLflow run {summary.run_id}")
    if summary.promotion is not None:
        verb = "promoted" if summary.promotion["promoted"] else "not promoted"
        lines.append(f"champion   {verb}: {summary.promotion['reason']}")
    return "\n".join(lines)


def evaluate_markdown(
    evaluation: Evaluation, run_id: str, promotion: Promotion | None, tracking_uri: str
) -> str:
    """The evaluation for the Prefect UI: pooled scores, best thresholds, promotion outcome
    and the MLflow run (`tracking_uri` holds it)."""
    pooled = evaluation.pooled
    lines = [
        f"# Evaluation of `{evaluation.plan.predictions}`",
        "",
        f"{len(evaluation.images)} images of split `{evaluation.plan.split}`, "
        f"{pooled.pixels:,} pixels.",
        "",
        mlflow_link(tracking_uri, run_id),
        "",
        "| metric | pooled |",
        "|---|---|",
    ]
    lines += [
        f"| {m} | {getattr(pooled, m):.4f} |" for m in ("dice", "iou", "bce", "precision", "recall")
    ]
    lines += [
        f"| dice of predicting {k.replace('_', ' ', 1)} (trivial) | {v:.4f} |"
        for k, v in pooled.trivial_dice.items()
    ]
    # Imported here: scoring loads torch, and the CLI imports this module before any work.
    from segflow.tasks.evaluate.scoring import THRESHOLDS

    for name, dice in evaluation.sweep.items():
        best = max(range(len(dice)), key=dice.__getitem__)
        lines += ["", f"Best threshold for {name}: {THRESHOLDS[best]:.2f} (Dice {dice[best]:.4f})."]
    if promotion is not None:
        verb = "promoted" if promotion.promoted else "not promoted"
        lines += ["", f"Champion: {verb}: {promotion.reason}."]
    return "\n".join(lines)


def _serving_model(summary: PipelineSummary) -> str:
    """``models:/<name>@<champion alias>`` once evaluation gave the alias a version, else the
    trained model's URI."""
    from segflow.flows.config import EvaluateConfig

    promotion = summary.stages["evaluate"].result.get("promotion") or {}
    name = summary.model_uri.removeprefix("models:/").split("/")[0].split("@")[0]
    if not (summary.model_uri.startswith("models:/") and promotion.get("champion_version")):
        return summary.model_uri
    return f"models:/{name}@{EvaluateConfig.model_fields['champion_alias'].default}"


def _training_page(summary: PipelineSummary) -> str:
    """The training run's page on the local MLflow UI (the server's root without one)."""
    from segflow.tasks.tracking.runs import run_page

    base, train = f"http://127.0.0.1:{MLFLOW_PORT}", summary.stages.get("train")
    return run_page(base, train.result["run_id"]) if train else base


def next_commands(summary: PipelineSummary, prefect_home: str | Path, bin_dir: Path) -> list[str]:
    """What to run after a pipeline, copy-pasteable with absolute paths and the project's
    executables in `bin_dir`: a new image predicted by the champion, the MLflow and Prefect UIs
    bound to 127.0.0.1, napari on the new predictions."""
    work = Path(summary.workdir).resolve()
    new, predicted = work / "new", work / "new-predictions.zarr"
    database = f"sqlite:///{work / 'mlflow.db'}"
    return [
        "# predict a new image with the champion model",
        f"{bin_dir / 'segflow'} synth {new} --count 1 --seed 1",
        f"{bin_dir / 'segflow'} infer {new / 'images'} {predicted} "
        f"--model {_serving_model(summary)} --workdir {work}",
        f"# MLflow UI, then open {_training_page(summary)}",
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {bin_dir / 'mlflow'} ui --backend-store-uri "
        f"{database} --host 127.0.0.1 --port {MLFLOW_PORT} --workers 1",
        f"# Prefect UI, then open http://127.0.0.1:{PREFECT_PORT}",
        f"PREFECT_HOME={prefect_home} PREFECT_SERVER_ANALYTICS_ENABLED=false "
        f"{bin_dir / 'prefect'} server start --host 127.0.0.1 --port {PREFECT_PORT}",
        "# napari, after installing the viewer extra: pip install 'segflow[viewer]'",
        f"{bin_dir / 'napari'} --plugin napari-ome-zarr {predicted / 'sample_000'}",
    ]


def pipeline_text(
    summary: PipelineSummary, prefect_home: str | Path, bin_dir: Path | None = None
) -> str:
    """The pipeline run for the terminal: each stage's status and time, the test scores, where
    the products are, and the next commands (`prefect_home` is the home of the local Prefect
    server; `bin_dir` holds the executables, by default those of the running Python)."""
    pooled = summary.stages["evaluate"].result["report"]["pooled"]
    lines = ["stage      status   seconds"]
    lines += [
        f"{name:<10} {stage.status:<8} {stage.seconds:7.1f}"
        for name, stage in summary.stages.items()
    ]
    lines += [
        "",
        f"model       {summary.model_uri}",
        f"predictions {summary.predictions}",
        "evaluation  " + ", ".join(f"{m} {pooled[m]:.4f}" for m in ("dice", "iou", "bce")),
        "",
        f"dataset store: {summary.store}  (python: segflow.tasks.storage.dataset)",
        f"MLflow runs:   training {summary.stages['train'].result['run_id']}, evaluation "
        f"{summary.stages['evaluate'].result['run_id']} (nested under it)",
        "",
        "next:",
    ]
    bin_dir = Path(sys.executable).parent if bin_dir is None else bin_dir
    lines += [f"  {line}" for line in next_commands(summary, prefect_home, bin_dir)]
    return "\n".join(lines)


def pipeline_markdown(summary: PipelineSummary, tracking_uri: str) -> str:
    """The pipeline run for the Prefect UI: a stage table, the test scores and the MLflow runs
    (`tracking_uri` holds them)."""
    lines = [
        f"# Pipeline in `{summary.workdir}`",
        "",
        f"Model `{summary.model_uri}`, predictions `{summary.predictions}`.",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {s.status} | {s.seconds:.1f} |" for n, s in summary.stages.items()]
    pooled = summary.stages["evaluate"].result["report"]["pooled"]
    lines += [
        "",
        f"Test Dice {pooled['dice']:.4f}, IoU {pooled['iou']:.4f}, BCE {pooled['bce']:.4f}.",
        "",
        "| MLflow run | where |",
        "|---|---|",
    ]
    lines += [
        f"| {stage} | {mlflow_link(tracking_uri, summary.stages[stage].result['run_id'])} |"
        for stage in ("train", "evaluate")
    ]
    return "\n".join(lines)
