"""Progress a user can follow: per-epoch log lines and progress artifacts in the flow run."""

from __future__ import annotations

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker

from segflow.flows.config import InferConfig, TrainConfig
from segflow.flows.infer import infer_images
from segflow.flows.train import train_unet
from tests.flows.test_train_flow import TINY
from tests.images import make_store, save


def flow_run_progress(state):
    """The log messages and the progress artifacts (key -> percent) of a finished flow run."""
    flow_run_id = state.state_details.flow_run_id
    APILogWorker.drain_all(timeout=5)
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
    return [log.message for log in logs], {a.key: a.data for a in artifacts}


def markdown_artifacts(state) -> dict[str, str]:
    """The markdown artifacts (key -> text) of a finished flow run."""
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                type=ArtifactFilterType(any_=["markdown"]),
            )
        )
    return {a.key: a.data for a in artifacts}


def test_train_and_infer_show_their_progress(tmp_path):
    workdir = tmp_path / "work"
    store = make_store(tmp_path, count=6, size=64)
    config = TrainConfig(store=str(store), workdir=str(workdir), registered_model="seen", **TINY)
    state = train_unet(config, return_state=True)
    messages, progress = flow_run_progress(state)
    epochs = [m for m in messages if m.startswith("member 0 epoch ")]
    assert [m.split(":")[0] for m in epochs] == ["member 0 epoch 1/2", "member 0 epoch 2/2"]
    assert "val Dice" in epochs[0] and epochs[0].endswith(" left")
    assert progress == {"train-member-0": pytest.approx(100.0)}
    plan = markdown_artifacts(state)["balance-plan"]
    assert plan.startswith("# Balancing plan\n\nTarget: 10.0%") and "Levers: " in plan
    assert any(m.startswith("balancing: target 10.0%") for m in messages)

    images = tmp_path / "new"
    for name in ("a", "b"):
        save(
            images / f"{name}.png", np.random.default_rng(0).integers(0, 255, (300, 260), np.uint8)
        )
    infer = InferConfig(
        input=str(images),
        output=str(tmp_path / "out.zarr"),
        model=state.result().model_uri,
        workdir=str(workdir),
        tile=64,
        margin=8,
        block=256,
        workers=1,
    )
    infer_state = infer_images(infer, return_state=True)
    messages, progress = flow_run_progress(infer_state)
    assert "[2/2] blocks predicted" in messages
    assert progress == {"infer-blocks": pytest.approx(100.0)}
    summary = markdown_artifacts(infer_state)["infer-summary"]
    assert f", trained in MLflow run `{state.result().run_id}`" in summary
