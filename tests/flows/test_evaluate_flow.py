import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from segflow.flows.cli import main
from segflow.flows.config import EvaluateConfig
from segflow.flows.evaluate import evaluate_predictions
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.tracking.registry import ModelRef
from segflow.tasks.tracking.runs import configure_tracking
from tests.images import make_predictions, make_store, noisy_probabilities, tiny_bundle


@pytest.fixture
def workdir(tmp_path):
    configure_tracking(tmp_path / "work", "segflow")
    return tmp_path / "work"


def _version(name: str) -> ModelRef:
    """A registered model version with a (training) run, as the train flow leaves one."""
    client = MlflowClient()
    with mlflow.start_run(run_name="train") as run:
        pass
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(
        name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    return ModelRef(f"models:/{name}/{version.version}", run.info.run_id, name, version.version)


def test_evaluation_logs_beside_the_model_and_promotes_the_better(tmp_path, workdir):
    store = make_store(tmp_path, count=8, size=96)
    dataset = open_dataset(store)
    truths = {n: np.asarray(dataset.mask(n)) for n in dataset.samples("test")}
    rng = np.random.default_rng(0)

    def evaluate(noise: float, promote: bool = True):
        ref = _version("unet")
        probs = {n: noisy_probabilities(rng, t, 2, noise=noise) for n, t in truths.items()}
        out = make_predictions(
            tmp_path / f"pred-v{ref.version}.zarr", store, probs, model=ref.to_dict()
        )
        config = EvaluateConfig(
            predictions=str(out), store=str(store), workdir=str(workdir), promote=promote, workers=1
        )
        return ref, evaluate_predictions(config)

    first, summary = evaluate(noise=0.8)
    assert summary.promotion["promoted"] and "no version held" in summary.promotion["reason"]
    client = MlflowClient()
    run = client.get_run(summary.run_id)
    assert run.data.tags["mlflow.parentRunId"] == first.run_id  # nested under the training run
    pooled = summary.report["pooled"]
    assert run.info.run_name == f"evaluate-test-unet/{first.version}"
    assert run.data.metrics["test/dice"] == pytest.approx(pooled["dice"])
    assert run.data.metrics["test/bce"] == pytest.approx(pooled["bce"])
    assert run.data.metrics["test/iou.class_1"] == pytest.approx(
        pooled["per_class"]["class_1"]["iou"]
    )
    assert {k.split("/")[0] for k in run.data.metrics} == {"test"}
    assert "trivial_dice.all_foreground" in run.data.params
    (test,) = run.inputs.dataset_inputs
    digest = run.data.tags["segflow.dataset_sha256"][:32]
    assert (test.dataset.name, test.dataset.digest) == (f"{store.name}/test", digest)
    description = client.get_model_version("unet", first.version).description
    assert f"| test/dice | {pooled['dice']:.4f} |" in description
    sweep = client.get_metric_history(summary.run_id, "test/sweep_dice.class_1")
    assert [m.step for m in sweep] == list(range(1, 100))
    files = {a.path for a in client.list_artifacts(summary.run_id, "evaluation")}
    assert {"evaluation/threshold_sweep.png", "evaluation/images.json"} <= files
    assert sum(p.startswith("evaluation/worst_") for p in files) == 2
    assert sum(p.startswith("evaluation/best_") for p in files) == 2
    tags = client.get_model_version("unet", first.version).tags
    assert float(tags["segflow.test_dice"]) == pytest.approx(pooled["dice"], abs=1e-6)

    better, summary = evaluate(noise=0.2)
    assert summary.promotion["promoted"], summary.promotion["reason"]
    worse, summary = evaluate(noise=1.2)
    assert not summary.promotion["promoted"]
    assert "does not beat" in summary.promotion["reason"]
    assert client.get_model_version_by_alias("unet", "champion").version == better.version

    with get_client(sync_client=True) as prefect:
        keys = {a.key for a in prefect.read_artifacts()}
    assert {"evaluation-per-image", "evaluation-summary"} <= keys


def test_cli_json_prints_the_metrics(tmp_path, workdir, capsys):
    store = make_store(tmp_path, count=8, size=64)
    dataset = open_dataset(store)
    probs = {
        n: (np.asarray(dataset.mask(n)) > 0).astype(np.float64)[None]
        for n in dataset.samples("test")
    }
    out = make_predictions(tmp_path / "pred.zarr", store, probs)
    code = main(
        ["evaluate", str(out), str(store), "--workdir", str(workdir), "--workers", "1", "--json"]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"]["pooled"]["dice"] == 1.0
    assert printed["report"]["images"] == len(probs)
    assert printed["promotion"] is None


def test_predictions_of_other_pixels_are_refused_in_one_line(tmp_path, workdir, capsys):
    """The issue's case: store B's predictions scored against store A (same sample names)."""
    a = make_store(tmp_path / "a", count=8, size=64, seed=0)
    b = make_store(tmp_path / "b", count=8, size=64, seed=1)
    names = open_dataset(a).samples("test")
    truths = {n: np.asarray(open_dataset(b).mask(n)) for n in names}
    probs = {n: (t > 0).astype(np.float64)[None] for n, t in truths.items()}
    ref = _version("unet")
    out = make_predictions(tmp_path / "of_b.zarr", b, probs, model=ref.to_dict())
    capsys.readouterr()
    command = ["evaluate", str(out), str(a), "--workdir", str(workdir), "--workers", "1"]
    assert main([*command, "--promote"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    first = names[0]
    assert len(errors) == 1 and f"of_b.zarr/{first}:" in errors[0]
    for store in (a, b):
        assert open_dataset(store).image(first).attrs["sha256"] in errors[0]
    assert not mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`segflow.stage` = 'evaluate'"
    ).shape[0]  # nothing logged
    assert not MlflowClient().get_registered_model("unet").aliases  # nothing promoted


def _silent_bundle(path):
    """A model that predicts no foreground anywhere (its head's bias is very negative)."""
    return tiny_bundle(path, seed=0, head_bias=-100.0, class_names=("background", "class_1"))


def test_a_model_that_predicts_nothing_is_scored_and_its_blocks_are_done(tmp_path, workdir, capsys):
    store = make_store(tmp_path, count=8, size=64)
    dataset = open_dataset(store)
    assert all(np.asarray(dataset.mask(n)).any() for n in dataset.samples("test"))
    out = tmp_path / "pred.zarr"
    infer = ["infer", str(store), str(out), "--model", str(_silent_bundle(tmp_path / "silent"))]
    infer += ["--split", "test", "--tile", "64", "--margin", "8", "--block", "256"]
    infer += ["--workers", "1"]
    assert main(infer) == 0
    assert "2 predicted, 0 already done" in capsys.readouterr().out
    evaluate = ["evaluate", str(out), str(store), "--workdir", str(workdir), "--workers", "1"]
    assert main([*evaluate, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["report"]
    assert report["images"] == 2 and report["pooled"]["dice"] == 0.0
    assert main(infer) == 0
    assert "0 predicted, 2 already done" in capsys.readouterr().out
