import logging
from pathlib import Path

import mlflow
import numpy as np
import PIL.Image
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)
from prefect.logging.handlers import APILogWorker

from segflow.flows.config import IngestConfig, TrainConfig
from segflow.flows.ingest import ingest_dataset
from segflow.flows.summaries import train_text
from segflow.flows.train import train_unet
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.tracking.model import load_model
from segflow.tasks.train.checkpoints import load_checkpoint
from tests.images import make_source, make_store

TINY = {
    "epochs": 2,
    "patches_per_epoch": 8,
    "patch_size": 32,
    "batch_size": 4,
    "base_channels": 4,
    "depth": 2,
    "num_workers": 0,
    "val_max_tiles": 8,
    "precision": "fp32",
}


@pytest.fixture
def workdir(tmp_path):
    return tmp_path / "work"


def test_train_flow_logs_registers_and_reloads(tmp_path, workdir):
    store = make_store(tmp_path, count=6, size=64)
    config = TrainConfig(store=str(store), workdir=str(workdir), registered_model="tiny", **TINY)
    summary = train_unet(config)

    assert mlflow.get_tracking_uri() == f"sqlite:///{workdir.resolve() / 'mlflow.db'}"
    client = MlflowClient()
    run = client.get_run(summary.run_id)
    assert run.data.params["lr"] == "0.001" and run.data.params["patch_size"] == "32"
    assert run.data.tags["segflow.store"] == str(store.resolve())
    assert len(run.data.tags["segflow.dataset_sha256"]) == 64
    assert "class_fraction.balanced.class_1" in run.data.params
    history = client.get_metric_history(summary.run_id, "val/dice")
    assert [m.step for m in history] == [0, 1]
    # The schedule ran its course (no early stop), so the last epoch's weights are registered.
    assert run.data.tags["segflow.kept_weights"] == "last"
    assert run.data.tags["segflow.learned"] == "true" and summary.learned
    assert float(run.data.tags["segflow.kept_val_dice"]) == pytest.approx(
        summary.val_dice, abs=1e-4
    )
    assert history[-1].value == summary.val_dice
    check_reviewer_pages(client, run, store)

    version = client.get_model_version_by_alias("tiny", "newest")
    assert summary.model_uri == f"models:/tiny/{version.version}"
    bundle = load_model("models:/tiny@newest")
    image = np.random.default_rng(0).integers(0, 255, (1, 1, 37, 51)).astype(np.float32)
    probs = bundle.predict(image)
    assert probs.shape == (1, 1, 37, 51) and ((probs >= 0) & (probs <= 1)).all()
    last = load_checkpoint(workdir / "training" / "unet" / "member_0" / "last.pt")["model"]
    for key, value in bundle.ensemble.members[0].state_dict().items():
        torch.testing.assert_close(value, last[key], rtol=0, atol=0)
    pyfunc = mlflow.pyfunc.load_model("models:/tiny@newest")
    np.testing.assert_allclose(pyfunc.predict(image), probs, rtol=1e-5, atol=1e-6)
    assert open_dataset(store).meta["sampling_plan"]["patch_size"] == 32
    # the balancing plan, and the threshold chosen on val that infer uses
    assert run.data.params["balance.target"] == "0.1000" and "balance.levers" in run.data.params
    plan = client.download_artifacts(summary.run_id, "balance_plan.md")
    assert "| class_1 |" in Path(plan).read_text()
    threshold = float(run.data.tags["segflow.val_threshold"])
    assert bundle.metadata["threshold"] == round(threshold, 2) and 0 < threshold < 1
    assert f"| threshold | {round(threshold, 2)}, chosen on val (Dice " in version.description


def check_reviewer_pages(client, run, store):
    """What a reviewer reads on the run page: model-training experiment, a telling run name,
    grouped metrics (train Dice included), dataset inputs, overlays to judge, a model card."""
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.run_name.startswith(f"unet-b4-d2-bce_dice-{store.stem}-")
    assert {k.split("/")[0] for k in run.data.metrics} == {"train", "val"}
    assert {"train/dice", "train/iou", "train/loss", "val/dice"} <= set(run.data.metrics)
    digest = run.data.tags["segflow.dataset_sha256"][:32]
    inputs = {
        i.tags[0].value: (i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs
    }
    assert inputs == {
        "training": (f"{store.name}/train", digest),
        "validation": (f"{store.name}/val", digest),
    }
    folders = {a.path for a in client.list_artifacts(run.info.run_id, "overlays")}
    assert folders == {"overlays/epoch_1", "overlays/epoch_2", "overlays/kept_last"}
    for folder in folders:
        for png in client.list_artifacts(run.info.run_id, folder):
            path = client.download_artifacts(run.info.run_id, png.path)
            assert min(PIL.Image.open(path).size) >= 512
    version = client.get_model_version_by_alias("tiny", "newest")
    card = version.description
    assert f"| member 0 (last weights) | {run.data.tags['segflow.kept_val_dice']} |" in card
    assert run.data.tags["segflow.dataset_sha256"] in card
    assert "trivial: all foreground" in card or "trivial: all background" in card
    assert 'load_model("models:/tiny/' in card
    assert client.get_registered_model("tiny").description.endswith(card)


def test_dedicated_model_and_fold_ensemble(tmp_path, workdir):
    store = make_store(tmp_path, count=8, size=64, num_classes=3)
    config = TrainConfig(
        store=str(store),
        workdir=str(workdir),
        registered_model=None,
        target_class=2,
        ensemble=2,
        ensemble_mode="folds",
        class_weights=True,
        **TINY,
    )
    summary = train_unet(config)
    assert len(summary.members) == 2
    children = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("segflow").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'",
    )
    assert len(children) == 2
    bundle = load_model(summary.model_uri)
    assert len(bundle.ensemble.members) == 2
    assert bundle.metadata["binary_class"] == 2
    assert bundle.predict(np.zeros((1, 1, 40, 40), np.float32)).shape == (1, 1, 40, 40)


def test_multi_class_store_trains_with_the_default_loss(tmp_path, workdir):
    store = make_store(tmp_path, count=6, size=64, num_classes=3)
    config = TrainConfig(store=str(store), workdir=str(workdir), registered_model=None, **TINY)
    summary = train_unet(config)
    run = MlflowClient().get_run(summary.run_id)
    assert run.data.params["loss"] == "ce_dice"
    assert run.info.run_name.startswith("unet-b4-d2-ce_dice-")
    assert load_model(summary.model_uri).predict(np.zeros((1, 1, 40, 40), np.float32)).shape == (
        1,
        3,
        40,
        40,
    )


def noise_store(tmp_path):
    """Random images with random masks (20 % foreground): there is nothing to learn."""
    make_source(tmp_path / "src", n=8, size=(64, 64))
    store = tmp_path / "noise.zarr"
    config = IngestConfig(
        source=str(tmp_path / "src"),
        store=str(store),
        workers=1,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    ingest_dataset(config)
    return store


def flow_run_record(flow_run_id):
    """The WARNING logs and the markdown artifact of a flow run, read back from Prefect."""
    APILogWorker.drain_all(timeout=5)
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(
            LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]),
                level=LogFilterLevel(ge_=logging.WARNING),
            )
        )
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    markdown = [a.data for a in artifacts if a.key == "train-summary"]
    return [log.message for log in logs], markdown


def test_model_that_did_not_learn_says_so_and_gets_no_alias(tmp_path, workdir):
    """The degenerate case: no weights beat predicting all foreground on validation."""
    store = noise_store(tmp_path)
    config = TrainConfig(
        store=str(store), workdir=str(workdir), registered_model="noise", lr=1e-6, **TINY
    )
    state = train_unet(config, return_state=True)
    summary = state.result()
    assert not summary.learned and summary.alias is None
    assert summary.trivial == "all_foreground" and summary.val_dice <= summary.trivial_dice
    reason = (
        f"val Dice {summary.val_dice:.4f} <= {summary.trivial_dice:.4f} of predicting all "
        "foreground"
    )
    assert summary.warning == f"the model did not learn: {reason}"
    lines = train_text(summary, workdir).splitlines()
    assert lines[0] == "model      models:/noise/1  (no alias `newest`: --alias-unlearned gives it)"
    assert lines[-1] == f"warning: {summary.warning}"
    warnings, markdown = flow_run_record(state.state_details.flow_run_id)
    assert any(m.startswith(summary.warning) for m in warnings), warnings
    assert markdown and f"**Warning: {summary.warning}.**" in markdown[0]

    client = MlflowClient()
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("noise", "newest")
    version = client.get_model_version("noise", "1")  # registered, to be inspected
    assert summary.model_uri == "models:/noise/1"
    assert version.tags["segflow.learned"] == "false"
    assert f"\n\ndid not learn: {reason} on the validation tiles" in version.description
    run = client.get_run(summary.run_id)
    assert run.data.tags["segflow.learned"] == "false"
    tags = run.data.tags
    assert float(tags["segflow.val_trivial_dice"]) == pytest.approx(summary.trivial_dice, abs=1e-4)
    assert tags["segflow.val_trivial_dice.all_background"] == "0.0000"

    asked = train_unet(config.model_copy(update={"alias_unlearned": True, "run_name": "asked"}))
    assert not asked.learned and asked.alias == "newest"
    assert str(client.get_model_version_by_alias("noise", "newest").version) == "2"
    assert "given the alias 'newest' as asked" in client.get_model_version("noise", "2").description


def test_bad_train_config_fails_before_work():
    with pytest.raises(ValueError, match="ensemble >= 2"):
        TrainConfig(store="x", ensemble_mode="folds")
    with pytest.raises(ValueError):
        TrainConfig(store="x", fg_oversample=1.5)


def test_train_flow_on_two_processes_logs_once_per_epoch(tmp_path, workdir, monkeypatch):
    """`nproc=2`: a helper rank trains beside the flow's process; rank 0 alone validates,
    logs and checkpoints, so MLflow has one value per epoch."""
    from segflow.tasks.train import distributed_launch

    helpers, start = [], distributed_launch._start
    monkeypatch.setattr(distributed_launch, "_start", lambda *a: helpers.append(a[0]) or start(*a))
    store = make_store(tmp_path, count=6, size=64)
    config = TrainConfig(
        store=str(store), workdir=str(workdir), registered_model="tiny-ddp", nproc=2, **TINY
    )
    summary = train_unet(config)
    client = MlflowClient()
    assert client.get_run(summary.run_id).data.params["nproc"] == "2"
    for metric in ("val/dice", "train/loss", "train/patches_per_second"):
        assert [m.step for m in client.get_metric_history(summary.run_id, metric)] == [0, 1]
    last = load_checkpoint(workdir / "training" / "unet" / "member_0" / "last.pt")
    assert last["epoch"] == 1 and last["config"]["nproc"] == 2
    assert summary.learned and load_model(summary.model_uri).ensemble.members
    assert helpers == [1]  # rank 1 started beside this process, rank 0
