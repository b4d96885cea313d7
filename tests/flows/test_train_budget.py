"""The train flow with a time budget: the plan sets what the user did not give, lands in the
MLflow params, the Prefect artifacts and the checkpoints, and a resume keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from segflow.flows.config import TrainConfig
from segflow.flows.train import PURE_STEPS, plan_training, train_unet
from segflow.tasks.train import budget
from segflow.tasks.train.checkpoints import load_checkpoint
from segflow.tasks.train.probe import Throughput
from segflow.tasks.train.training_run import PLAN_FILE
from tests.images import make_store

TINY = {"base_channels": 4, "depth": 2, "num_workers": 0, "val_max_tiles": 8, "precision": "fp32"}


@pytest.fixture
def workdir(tmp_path):
    return tmp_path / "work"


def artifact_keys(flow_run_id):
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a.data for a in artifacts}


def test_the_budget_plan_sets_what_was_not_given_and_is_stored(tmp_path, workdir, monkeypatch):
    store = make_store(tmp_path, count=6, size=64)
    config = TrainConfig(
        store=str(store), workdir=str(workdir), registered_model=None, max_minutes=0.1,
        epochs=2, **TINY,
    )  # fmt: skip
    state = train_unet(config, return_state=True)
    summary = state.result()

    params = MlflowClient().get_run(summary.run_id).data.params
    assert params["plan.planned"] == "patches_per_epoch,patch_size,batch_size"
    assert params["base_channels"] == params["plan.base_channels"] == "4"
    assert params["epochs"] == params["plan.epochs"] == "2"  # given: kept
    assert params["patch_size"] == params["plan.patch_size"] == "64"  # the images' side
    assert params["patches_per_epoch"] == params["plan.patches_per_epoch"]
    assert params["batch_size"] == params["plan.batch_size"]
    assert params["plan.seconds"] == "6" and float(params["plan.patches_per_second"]) > 0
    plan_md = MlflowClient().download_artifacts(summary.run_id, "budget_plan.md")
    assert "| patches_per_epoch | " in Path(plan_md).read_text()
    assert "budget-plan" in artifact_keys(state.state_details.flow_run_id)
    assert summary.plan.startswith("plan: U-Net base 4, 2 epochs x ")  # given: kept

    folder = workdir / "training" / "unet"
    stored = json.loads((folder / PLAN_FILE).read_text())
    assert str(stored["patches_per_epoch"]) == params["patches_per_epoch"]
    checkpoint = load_checkpoint(folder / "member_0" / "last.pt")["config"]
    assert checkpoint["plan"] == stored and checkpoint["patch_size"] == 64

    # A resume (asking for one more epoch) keeps the plan it started with: no new probe.
    def no_probe(*args, **kwargs):
        raise AssertionError("a resume probed again")

    monkeypatch.setattr(budget, "measure_throughput", no_probe)
    resumed = TrainConfig(**{**config.model_dump(exclude_unset=True), "resume": True, "epochs": 3})
    again = train_unet(resumed)
    assert again.run_id == summary.run_id
    checkpoint = load_checkpoint(folder / "member_0" / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["plan"] == stored
    assert checkpoint["config"]["patches_per_epoch"] == stored["patches_per_epoch"]


def test_the_pure_steps_plan_without_prefect(tmp_path, workdir, monkeypatch):
    """``PURE_STEPS``, as ``benchmarks/train_quality.py`` plans its segflow arm: no task runs
    (no run logger), the planned fields set and the given ones kept."""

    def no_task(*args, **kwargs):
        raise AssertionError("a task ran")

    monkeypatch.setattr("segflow.tasks.train.tasks.get_run_logger", no_task)
    store = make_store(tmp_path, count=6, size=64)
    config = TrainConfig(store=str(store), workdir=str(workdir), max_minutes=0.1, **TINY)
    planned, balance, plan = plan_training(config, PURE_STEPS)
    assert plan is not None and set(plan.planned) == set(budget.PLANNED) - {"base_channels"}
    assert planned.patch_size == plan.patch_size == 64  # the images' side
    assert (planned.epochs, planned.patches_per_epoch) == (plan.epochs, plan.patches_per_epoch)
    assert planned.base_channels == 4 and balance.in_channels == 1


def test_a_halved_base_reaches_the_model_trained(tmp_path, workdir, monkeypatch):
    def measure(balance, members):  # a slow device: base 32 gets far fewer than MIN_STEPS
        rate = {32: 0.5, 16: 2.0}[members.unet.base_channels]
        return Throughput(rate, 0.1, 0.1, 0.1, 1.0, "cpu fp32")

    monkeypatch.setattr(budget, "measure_throughput", measure)
    store = make_store(tmp_path, count=6, size=64)
    tiny = {k: v for k, v in TINY.items() if k != "base_channels"}
    config = TrainConfig(store=str(store), workdir=str(workdir), max_minutes=1, **tiny)
    planned, balance, plan = plan_training(config, PURE_STEPS)
    assert plan.base_channels == planned.base_channels == 16 and "base_channels" in plan.planned
    assert planned.unet(balance.in_channels, balance.out_channels).base_channels == 16
