"""MLflow runs: where they go, what a run records as params, and what it was run on (data
and code)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource

# MLflow 3's UI opens an experiment without this tag in its GenAI view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
# MLflow keeps at most 36 characters of a dataset digest.
DIGEST_CHARS = 32


def configure_tracking(workdir: Path, experiment: str) -> str:
    """Use ``MLFLOW_TRACKING_URI`` if set, else a SQLite database and artifact folder in
    `workdir` (each call its own, also in one process that runs many flows); select (create)
    `experiment`, marked as model training. Returns the tracking URI.

    ``mlflow.set_tracking_uri`` also exports the URI as ``MLFLOW_TRACKING_URI``; a workdir's
    database is taken back out of the environment, where a later call and every process
    started from this one would take it for the user's choice.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)  # over an earlier call's, which MLflow would keep
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(f"sqlite:///{(workdir / 'mlflow.db').resolve()}")
        _restore("MLFLOW_TRACKING_URI", uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            location = (workdir / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
    selected = mlflow.set_experiment(experiment)
    if selected.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return mlflow.get_tracking_uri()


def _restore(name: str, value: str | None) -> None:
    """Environment variable `name` back to `value` (None: unset)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def tracking_uri() -> str:
    """Where runs go now (after :func:`configure_tracking`)."""
    return mlflow.get_tracking_uri()


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b": "value"}`` strings, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def git_commit() -> str | None:
    """The commit of the git checkout segflow runs from, or None (not a checkout, no git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def source_tags() -> dict[str, str]:
    """Tags of the code a run ran: ``mlflow.source.git.commit`` when run from a checkout."""
    commit = git_commit()
    return {GIT_COMMIT_TAG: commit} if commit else {}


def store_dataset(store: str, fingerprint: str, split: str | None) -> MetaDataset:
    """The `split` (None: all) of the dataset store at `store` as an MLflow dataset: named
    ``<store name>/<split>``, the store's path as source, its content hash (first
    :data:`DIGEST_CHARS` hex digits of ``segflow.dataset_sha256``) as digest."""
    path = Path(store).resolve()
    name = f"{path.name}/{split or 'all'}"
    return MetaDataset(LocalArtifactDatasetSource(str(path)), name, fingerprint[:DIGEST_CHARS])


def log_store_inputs(store: str, fingerprint: str, splits: Mapping[str, str | None]) -> None:
    """Log the store's splits as inputs of the active run: context (``training``,
    ``validation``, ``test``) -> split."""
    for context, split in splits.items():
        mlflow.log_input(store_dataset(store, fingerprint, split), context=context)


# MLflow 3.17's UI opens in its GenAI view unless the page address asks for the model-training
# view: its global switch ignores the experiment's `mlflow.experimentKind` tag, and the short
# `#/runs/<id>` route redirects without the query.
TRAINING_VIEW = "?workflowType=machine_learning"


def run_page(base: str, run_id: str) -> str:
    """The address of MLflow run `run_id` on the UI at `base`, in the model-training view (the
    experiment looked up in the current tracking store; the short route if it is not there)."""
    try:
        experiment = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    except Exception:  # an unknown run or an unreachable store: the short route still works
        return f"{base.rstrip('/')}/#/runs/{run_id}{TRAINING_VIEW}"
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}{TRAINING_VIEW}"
