"""The evaluation run in MLflow: where it goes, what it holds, what the registry keeps."""

import json

import mlflow
import numpy as np
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from segflow.tasks.tracking.evaluation import (
    EvaluationArtifacts,
    EvaluationRun,
    log_evaluation_run,
)
from segflow.tasks.tracking.registry import ModelRef
from segflow.tasks.tracking.runs import configure_tracking


@pytest.fixture
def tracking(tmp_path):
    configure_tracking(tmp_path / "work", "segflow")
    return MlflowClient()


def _registered(client: MlflowClient, experiment: str) -> ModelRef:
    """Version 1 of a registered model, made by a training run in `experiment`."""
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="train") as run:
        pass
    client.create_registered_model("unet")
    version = client.create_model_version(
        "unet", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    return ModelRef("models:/unet/1", run.info.run_id, "unet", str(version.version))


def _record(model: ModelRef, dice: float) -> tuple[EvaluationRun, EvaluationArtifacts]:
    run = EvaluationRun(
        model=model,
        name="evaluate-test",
        tags={"segflow.stage": "evaluate"},
        params={"split": "test", "images": 2, "threshold": 0.5},
        metrics={"test/dice": dice, "test/iou.class_1": 0.5},
        sweep={"test/sweep_dice.class_1": {1: 0.25, 50: dice, 99: 0.125}},
        dice=dice,
        key="abc:test",
        data=("/data/cells.zarr", "f" * 64, "test"),
    )
    panel = np.zeros((4, 12, 3), np.uint8)
    artifacts = EvaluationArtifacts(
        figure=Figure(),
        table=[{"image": "a", "dice": 0.5}, {"image": "b", "dice": 1.0}],
        report={"pooled": {"dice": dice}},
        overlays={"worst_a": panel, "best_b": panel},
    )
    return run, artifacts


def test_run_is_nested_under_the_training_run_and_holds_everything(tracking, tmp_path):
    model = _registered(tracking, "elsewhere")
    run_id, promotion = log_evaluation_run(
        *_record(model, 0.75), experiment="segflow", promote=True, alias="champion"
    )
    run = tracking.get_run(run_id)
    training = tracking.get_run(model.run_id)
    assert run.info.run_name == "evaluate-test"
    assert run.info.experiment_id == training.info.experiment_id  # not the "segflow" experiment
    assert run.data.tags["mlflow.parentRunId"] == model.run_id
    assert run.data.tags["segflow.stage"] == "evaluate"
    assert run.data.params == {"split": "test", "images": "2", "threshold": "0.5"}
    assert run.data.metrics == {
        "test/dice": 0.75,
        "test/iou.class_1": 0.5,
        "test/sweep_dice.class_1": 0.125,  # the last step
    }
    history = tracking.get_metric_history(run_id, "test/sweep_dice.class_1")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.25), (50, 0.75), (99, 0.125)]
    files = {a.path for a in tracking.list_artifacts(run_id, "evaluation")}
    assert files == {
        f"evaluation/{f}"
        for f in ("threshold_sweep.png", "images.json", "report.json", "worst_a.png", "best_b.png")
    }
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation")
    with open(f"{local}/report.json") as f:
        assert json.load(f) == {"pooled": {"dice": 0.75}}
    with open(f"{local}/images.json") as f:
        table = json.load(f)
    assert table["columns"] == ["image", "dice"]
    assert table["data"] == [["a", 0.5], ["b", 1.0]]
    tags = tracking.get_model_version("unet", "1").tags
    assert tags == {"segflow.test_dice": "0.750000", "segflow.test_key": "abc:test"}
    (test,) = run.inputs.dataset_inputs
    assert (test.dataset.name, test.dataset.digest) == ("cells.zarr/test", "f" * 32)
    assert json.loads(test.dataset.source) == {"uri": "/data/cells.zarr"}
    assert [(t.key, t.value) for t in test.tags] == [("mlflow.data.context", "test")]
    assert promotion.promoted and "no version held 'champion'" in promotion.reason
    assert str(tracking.get_model_version_by_alias("unet", "champion").version) == "1"


def test_a_model_without_run_is_evaluated_in_the_experiment(tracking):
    run_id, promotion = log_evaluation_run(
        *_record(ModelRef("bundle/", None), 0.5),
        experiment="other",
        promote=False,
        alias="champion",
    )
    run = tracking.get_run(run_id)
    assert run.info.experiment_id == tracking.get_experiment_by_name("other").experiment_id
    assert "mlflow.parentRunId" not in run.data.tags
    assert promotion is None


def test_test_scores_are_appended_to_the_version_description(tracking):
    model = _registered(tracking, "segflow")
    tracking.update_model_version("unet", "1", description="# card\n\nlearned")
    log_evaluation_run(*_record(model, 0.5), experiment="segflow", promote=False, alias="c")
    run_id, _ = log_evaluation_run(
        *_record(model, 0.75), experiment="segflow", promote=False, alias="c"
    )
    description = tracking.get_model_version("unet", "1").description
    # Scored again: the test section is replaced, the card kept.
    assert description.startswith("# card\n\nlearned\n## Test scores\n")
    assert description.count("## Test scores") == 1
    assert f"Evaluation run `{run_id}`" in description
    assert "| test/dice | 0.7500 |" in description
