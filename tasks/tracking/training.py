"""The training run in MLflow: its params and tags, the members' nested runs, per-epoch
metrics, overlay images and the logged, registered model.

The train stage hands plain values (numbers, dicts of metrics, arrays, paths); every MLflow
name of a training run (tags, run names, artifact paths) is written here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from segflow.tasks.tracking.cards import ModelCard, describe_version
from segflow.tasks.tracking.model import log_bundle_model
from segflow.tasks.tracking.overlays import overlay
from segflow.tasks.tracking.runs import flat_params, log_store_inputs, source_tags

# Tag of a member run, a training run and a model version: did it beat the trivial predictors?
LEARNED_TAG = "segflow.learned"


def start_training_run(
    run_name: str,
    params: Mapping[str, Any],
    *,
    store: str,
    dataset_sha256: str,
    train_samples: int,
    flow_run_id: str | None,
    class_fractions: Mapping[str, Mapping[str, float]],
    plans: Mapping[str, tuple[Mapping[str, str], str]],
) -> str:
    """Start a run named `run_name` in the current experiment and record what it trains on;
    returns its id.

    Parameters
    ----------
    params
        The flow config, logged flat (``a.b`` keys).
    store, dataset_sha256, train_samples, flow_run_id
        Tags ``segflow.store``, ``segflow.dataset_sha256``, ``segflow.train_samples`` and
        ``prefect.flow_run_id`` (empty outside a flow run); the store's train and val splits
        are the run's ``training`` and ``validation`` dataset inputs (digest: the hash).
    class_fractions
        Kind (``uniform``, ``balanced``) -> class name -> pixel fraction, logged as params
        ``class_fraction.<kind>.<class name>``.
    plans
        Plan name (``balance_plan``, ``budget_plan``) -> its params (``balance.*``,
        ``plan.*``) and its markdown, logged as ``<name>.md``.
    """
    with mlflow.start_run(run_name=run_name) as run:
        fractions = {
            f"class_fraction.{kind}.{name}": f"{value:.4f}"
            for kind, values in class_fractions.items()
            for name, value in values.items()
        }
        planned = {k: v for plan_params, _ in plans.values() for k, v in plan_params.items()}
        mlflow.log_params(flat_params(params) | fractions | planned)
        for name, (_, markdown) in plans.items():
            mlflow.log_text(markdown, f"{name}.md")
        mlflow.set_tags(
            {
                "segflow.store": store,
                "segflow.dataset_sha256": dataset_sha256,
                "segflow.train_samples": train_samples,
                "prefect.flow_run_id": flow_run_id or "",
            }
            | source_tags()
        )
        log_store_inputs(store, dataset_sha256, {"training": "train", "validation": "val"})
    return run.info.run_id


def start_member_run(parent_run_id: str, member: int) -> str:
    """Create the nested run ``member-<member>`` of an ensemble member; returns its id."""
    with mlflow.start_run(run_id=parent_run_id):
        run = mlflow.start_run(run_name=f"member-{member}", nested=True)
        mlflow.end_run()
    return run.info.run_id


@contextmanager
def member_run(run_id: str, member: int) -> Iterator[None]:
    """Make `run_id` (a member's run, or the parent run of a single model) the active run,
    tagged ``member``; the ``log_*`` functions below write to it."""
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tag("member", member)
        yield


def log_epoch_metrics(metrics: Mapping[str, float], epoch: int) -> None:
    """One epoch's metrics (name -> value), at step `epoch`."""
    mlflow.log_metrics(dict(metrics), step=epoch)


def log_overlays(tiles: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], when: str) -> None:
    """One overlay panel per tile, as ``overlays/<when>/<name>.png`` (e.g. ``epoch_3``).

    `tiles` maps a name to (image ``(C, H, W)``, truth ``(H, W)``, prediction ``(H, W)``).
    """
    for name, (image, truth, pred) in tiles.items():
        panel = overlay(image, truth, pred, title=f"{name}, {when.replace('_', ' ')}")
        mlflow.log_image(panel, artifact_file=f"overlays/{when}/{name}.png")


def log_member_outcome(summary: Mapping[str, Any], learned: bool) -> None:
    """A member's one-off results as tags ``segflow.<key>`` (e.g. ``best_epoch``,
    ``kept_weights``, ``trivial_dice.all_foreground``), and whether its kept weights beat the
    trivial predictors (tag ``segflow.learned``: true/false). Tags, not params: a resumed run
    may write them again."""
    mlflow.set_tags({f"segflow.{key}": _text(value) for key, value in summary.items()})
    mlflow.set_tag(LEARNED_TAG, str(learned).lower())


def _text(value: Any) -> str:
    """A tag value: floats to 4 decimals."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Verdict:
    """Whether a trained model beat the trivial predictors on validation, and what follows."""

    learned: bool  # tag ``segflow.learned`` of the training run and the model version
    description: str  # the first line of the version's model card: why
    alias: str | None  # given to the registered version; None: no alias


def log_trained_model(
    run_id: str,
    bundle: Path,
    *,
    in_channels: int,
    out_channels: int,
    registered_name: str | None,
    summary: Mapping[str, Any],
    verdict: Verdict,
    card: ModelCard,
) -> str:
    """Log the model `bundle` to run `run_id` with `summary` as tags ``segflow.<key>`` (e.g.
    ``val_dice``) and the `verdict`'s tag, and register it under `registered_name` (None: do
    not): the version gets the tag and the alias of `verdict`, and the version and the
    registered model get the `card` as description.

    Returns
    -------
    str
        ``models:/<name>/<version>`` when registered, else the logged model's URI.
    """
    learned = str(verdict.learned).lower()
    with mlflow.start_run(run_id=run_id):
        info = log_bundle_model(
            bundle,
            in_channels=in_channels,
            out_channels=out_channels,
            registered_name=registered_name,
            alias=verdict.alias,
        )
        mlflow.set_tags({f"segflow.{key}": _text(value) for key, value in summary.items()})
        mlflow.set_tag(LEARNED_TAG, learned)
    if not registered_name:
        return info.model_uri
    version = str(info.registered_model_version)
    MlflowClient().set_model_version_tag(registered_name, version, LEARNED_TAG, learned)
    describe_version(registered_name, version, card)
    return f"models:/{registered_name}/{version}"
