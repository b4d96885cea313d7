"""What every run records about where it ran: the experiment kind, the code, the data."""

import os
import subprocess

import mlflow
import pytest
from mlflow import MlflowClient

from segflow.tasks.tracking import runs
from segflow.tasks.tracking.runs import configure_tracking, log_store_inputs, source_tags


@pytest.fixture
def tracking(tmp_path):
    configure_tracking(tmp_path / "work", "segflow")
    return MlflowClient()


def test_experiment_is_marked_for_model_training(tracking):
    experiment = tracking.get_experiment_by_name("segflow")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_each_workdir_gets_its_own_database_unless_the_user_chose_one(tmp_path, monkeypatch):
    first = configure_tracking(tmp_path / "a", "segflow")
    assert "MLFLOW_TRACKING_URI" not in os.environ  # nor in a process started from here
    assert configure_tracking(tmp_path / "b", "segflow") != first  # one process, two flows
    assert (tmp_path / "b" / "mlflow.db").exists()
    server = f"sqlite:///{tmp_path / 'chosen.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    assert configure_tracking(tmp_path / "c", "segflow") == server
    assert not (tmp_path / "c").exists()


def test_store_splits_are_dataset_inputs_with_the_content_hash(tracking, tmp_path):
    with mlflow.start_run() as run:
        log_store_inputs(str(tmp_path / "cells.zarr"), "ab" * 32, {"training": "train"})
    (given,) = tracking.get_run(run.info.run_id).inputs.dataset_inputs
    assert given.dataset.name == "cells.zarr/train" and given.dataset.digest == "ab" * 16
    assert given.tags[0].value == "training"


def test_git_commit_tag_only_from_a_checkout(monkeypatch, tmp_path):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=runs.__file__[:-7]
    )
    if head.returncode == 0:
        assert source_tags() == {"mlflow.source.git.commit": head.stdout.strip()}
    monkeypatch.setattr(runs, "__file__", str(tmp_path / "runs.py"))  # not a checkout
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert source_tags() == {}
