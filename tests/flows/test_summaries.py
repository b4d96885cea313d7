"""The text the CLI prints and the markdown the flows publish, for known summaries."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from segflow.flows.evaluate import EvaluateSummary
from segflow.flows.infer import InferSummary
from segflow.flows.ingest import IngestSummary
from segflow.flows.pipeline import PipelineSummary, StageReport
from segflow.flows.summaries import (
    evaluate_markdown,
    evaluate_text,
    infer_text,
    ingest_markdown,
    ingest_text,
    pipeline_markdown,
    pipeline_text,
    train_markdown,
    train_text,
)
from segflow.flows.train import TrainSummary
from segflow.tasks.tracking.registry import Promotion

SWEEP = {"fg": [0.1 * (i % 7) for i in range(99)]}  # best at the 7th threshold, 0.07
POOLED = {
    "pixels": 4096,
    "bce": 0.123456,
    "dice": 0.654321,
    "iou": 0.5,
    "precision": 0.7,
    "recall": 0.6,
    "per_class": {
        "background": {"dice": 0.99, "iou": 0.98},
        "fg": {"dice": 0.65, "iou": 0.5},
    },
    "trivial_dice": {"all_background": 0.0, "all_foreground": 0.123},
}
REPORT = {
    "split": "test",
    "images": 2,
    "pooled": POOLED,
    "threshold_sweep": {"thresholds": [(i + 1) / 100 for i in range(99)], "dice": SWEEP},
}


@pytest.fixture
def ingested() -> IngestSummary:
    return IngestSummary(
        store="s.zarr",
        samples=5,
        written=3,
        unchanged=2,
        rejected=[{"path": "a.png", "reason": "bad"}],
        split={"train": 3, "val": 1, "test": 1},
        class_names=["background", "fg"],
        class_fractions=[0.9123, 0.0877],
    )


@pytest.fixture
def pipeline(tmp_path) -> PipelineSummary:
    workdir = tmp_path.resolve()
    return PipelineSummary(
        workdir=str(workdir),
        store=f"{workdir}/dataset.zarr",
        model_uri="models:/m/1",
        predictions=f"{workdir}/p.zarr",
        stages={
            "ingest": StageReport(status="ran", seconds=1.25, result={}),
            "train": StageReport(status="skipped", seconds=0.0, result={"run_id": "t1"}),
            "infer": StageReport(status="ran", seconds=12.0, result={}),
            "evaluate": StageReport(
                status="ran", seconds=3.0, result={"run_id": "e1", "report": REPORT}
            ),
        },
    )


def test_ingest_text_and_markdown(ingested):
    assert ingest_text(ingested).splitlines() == [
        "store      s.zarr",
        "samples    5 (3 written, 2 unchanged)",
        "split      train 3, val 1, test 1",
        "classes    background 91.23%, fg 8.77%",
        "rejected   1",
        "  a.png: bad",
    ]
    markdown = ingest_markdown(ingested)
    assert markdown.startswith("# Ingest into `s.zarr`\n\n5 samples stored (3 written, 2 unch")
    assert "| fg | 0.0877 |" in markdown and "| `a.png` | bad |" in markdown
    assert "| split | samples |\n|---|---|\n| train | 3 |\n| val | 1 |\n| test | 1 |" in markdown
    assert "{" not in markdown  # no Python reprs
    assert "rejected input" not in ingest_markdown(ingested.model_copy(update={"rejected": []}))


def test_train_and_infer_text(tmp_path):
    trained = TrainSummary(
        run_id="t1",
        model_uri="models:/m/1",
        val_dice=0.5,
        members=[],
        class_fractions_uniform=[0.91234, 0.08766],
        class_fractions_balanced=[0.6, 0.4],
        balancing="balancing: target 10.0%, rarest class 8.77% in the data -> 40.00% sampled; "
        "levers: oversample",
    )
    assert train_text(trained, tmp_path).splitlines() == [
        "model      models:/m/1",
        f"MLflow run t1  (mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db)",
        "val Dice   0.5000",
        "balancing: target 10.0%, rarest class 8.77% in the data -> 40.00% sampled; levers: "
        "oversample",
    ]
    planned = trained.model_copy(update={"plan": "plan: 3 epochs x 64 patches of 256²"})
    assert train_text(planned, tmp_path).splitlines()[-1] == "plan: 3 epochs x 64 patches of 256²"
    assert "Plan: 3 epochs x 64 patches of 256² (artifact `budget-plan`)." in train_markdown(
        planned, "http://h:5000"
    )
    markdown = train_markdown(trained, "http://h:5000")
    assert "[MLflow run `t1`](http://h:5000/#/runs/t1?workflowType=machine_learning)." in markdown
    assert "Val Dice 0.5000 over 0 member(s)" in markdown
    assert "Balancing: target 10.0%, rarest" in markdown and "(artifact `balance-plan`)" in markdown
    inferred = InferSummary(
        output="o.zarr",
        model="models:/m/1",
        images=3,
        blocks_predicted=4,
        blocks_already_done=1,
        failed={"x": "boom"},
        rejected=[("y.png", "unreadable")],
        objects={},
    )
    assert infer_text(inferred).splitlines() == [
        "predictions o.zarr  (3 images, model models:/m/1)",
        "blocks      4 predicted, 1 already done",
        "  failed x: boom",
        "  rejected y.png: unreadable",
        "view        napari --plugin napari-ome-zarr o.zarr/<image>",
    ]


def test_evaluate_text_and_markdown():
    promotion = {"promoted": False, "reason": "worse", "champion_version": "1"}
    text = evaluate_text(EvaluateSummary(run_id="r1", report=REPORT, promotion=promotion))
    assert text.splitlines() == [
        "evaluated  2 images of split test",
        "pooled     dice 0.6543, iou 0.5000, bce 0.1235, precision 0.7000, recall 0.6000",
        "trivial    all background dice 0.0000, all foreground dice 0.1230",
        "  background       Dice 0.9900  IoU 0.9800",
        "  fg               Dice 0.6500  IoU 0.5000",
        "best threshold for fg: 0.07 (Dice 0.6000)",
        "MLflow run r1",
        "champion   not promoted: worse",
    ]
    assert "champion" not in evaluate_text(
        EvaluateSummary(run_id="r1", report=REPORT, promotion=None)
    )
    evaluation = SimpleNamespace(
        plan=SimpleNamespace(predictions="p.zarr", split="test"),
        images={"a": None, "b": None},
        pooled=SimpleNamespace(**POOLED),
        sweep=SWEEP,
    )
    markdown = evaluate_markdown(evaluation, "r1", Promotion(True, "better", "2"), "http://h:5000/")
    assert "2 images of split `test`, 4,096 pixels." in markdown
    assert "[MLflow run `r1`](http://h:5000/#/runs/r1?workflowType=machine_learning)" in markdown
    assert "| dice | 0.6543 |" in markdown and "| recall | 0.6000 |" in markdown
    assert "| dice of predicting all foreground (trivial) | 0.1230 |" in markdown
    assert "Best threshold for fg: 0.07 (Dice 0.6000)." in markdown
    assert markdown.endswith("Champion: promoted: better.")


def test_pipeline_text_and_markdown(pipeline):
    workdir = pipeline.workdir
    text = pipeline_text(pipeline, "/home/p", Path("/venv/bin")).splitlines()
    assert text[:13] == [
        "stage      status   seconds",
        "ingest     ran          1.2",
        "train      skipped      0.0",
        "infer      ran         12.0",
        "evaluate   ran          3.0",
        "",
        "model       models:/m/1",
        f"predictions {workdir}/p.zarr",
        "evaluation  dice 0.6543, iou 0.5000, bce 0.1235",
        "",
        f"dataset store: {workdir}/dataset.zarr  (python: segflow.tasks.storage.dataset)",
        "MLflow runs:   training t1, evaluation e1 (nested under it)",
        "",
    ]
    assert text[13] == "next:"
    assert f"  /venv/bin/segflow synth {workdir}/new --count 1 --seed 1" in text
    markdown = pipeline_markdown(pipeline, f"sqlite:///{workdir}/mlflow.db")
    assert markdown.startswith(f"# Pipeline in `{workdir}`\n\nModel `models:/m/1`, predictions")
    assert "| infer | ran | 12.0 |" in markdown
    assert "Test Dice 0.6543, IoU 0.5000, BCE 0.1235." in markdown
    assert "| train | MLflow run `t1` (tracking store `sqlite:///" in markdown
    assert "http://127.0.0.1:5000/#/runs/e1?workflowType=machine_learning |" in markdown
