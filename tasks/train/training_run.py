"""The training run: its MLflow run and its checkpoint folder, opened once per flow run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from segflow.tasks.tracking.runs import configure_tracking
from segflow.tasks.tracking.training import start_training_run
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.checkpoints import PARTIAL_SUFFIX

if TYPE_CHECKING:  # the budget module imports the members' training, which imports this one
    from segflow.tasks.train.budget import BudgetPlan

# The file in a checkpoint folder that names the folder's MLflow run, so resumes reopen it.
RUN_ID_FILE = "mlflow_run_id"
# The budget plan a run started with, so that its resumes keep it.
PLAN_FILE = "budget_plan.json"


@dataclass(frozen=True)
class RunSettings:
    """Where the training run goes (built by ``TrainConfig.training_run()``)."""

    workdir: Path  # checkpoints, and the MLflow database unless MLFLOW_TRACKING_URI is set
    experiment: str
    run_name: str  # checkpoint folder name (the MLflow run is named by `mlflow_run_name`)
    resume: bool
    params: Mapping[str, Any]  # the flow config, logged as the run's params


@dataclass(frozen=True)
class TrainingRun:
    """An open training run: its MLflow run id and its checkpoint folder."""

    run_id: str
    folder: Path


def run_folder(settings: RunSettings) -> Path:
    """The run's checkpoint folder, ``workdir/training/<run_name>``: one writer at a time
    (the train flow holds its lock, :mod:`segflow.tasks.runtime.locks`)."""
    return settings.workdir / "training" / settings.run_name


def mlflow_run_name(params: Mapping[str, Any], store: str, day: date) -> str:
    """What the run trains, e.g. ``unet-b32-d4-bce_dice-cells-2026-11-30`` (``-x3`` after the
    loss for an ensemble of 3): architecture, loss, the store's name, the day it started."""
    size = params.get("ensemble", 1)
    ensemble = f"-x{size}" if size != 1 else ""
    data = Path(store).name.removesuffix(".zarr")
    model = f"unet-b{params.get('base_channels')}-d{params.get('depth')}-{params.get('loss')}"
    return f"{model}{ensemble}-{data}-{day.isoformat()}"


def stored_plan(settings: RunSettings) -> dict[str, Any] | None:
    """The budget plan (``BudgetPlan.to_dict()``) of the run a resume continues; None on a
    fresh start or when that run had none."""
    path = run_folder(settings) / PLAN_FILE
    if not (settings.resume and path.exists()):
        return None
    return json.loads(path.read_text())


def open_training_run(
    balance: Balance,
    settings: RunSettings,
    flow_run_id: str | None,
    plan: BudgetPlan | None = None,
) -> TrainingRun:
    """Start (or, with ``settings.resume``, reopen) the MLflow run of the training.

    A new run with the name of an old one starts from scratch: the old checkpoints are removed
    (its MLflow record stays; the folder's writer lock lies beside it, so a holder keeps
    holding it). `flow_run_id` is the Prefect flow run, recorded as a tag. The budget `plan`,
    if any, is logged (params ``plan.*``, ``budget_plan.md``) and kept in the folder for
    resumes (:func:`stored_plan`).
    """
    configure_tracking(settings.workdir, settings.experiment)
    folder = run_folder(settings)
    marker = folder / RUN_ID_FILE
    if settings.resume and marker.exists():
        # Under the folder's lock, a checkpoint temporary can only be a dead writer's.
        for leftover in folder.rglob(f"*{PARTIAL_SUFFIX}"):
            leftover.unlink()
        return TrainingRun(marker.read_text().strip(), folder)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    run_id = start_training_run(
        mlflow_run_name(settings.params, balance.store, date.today()),
        settings.params,
        store=str(Path(balance.store).resolve()),
        dataset_sha256=dataset_fingerprint(open_dataset(balance.store)),
        train_samples=len(balance.train_ids),
        flow_run_id=flow_run_id,
        class_fractions={
            kind: dict(zip(balance.class_names, fractions, strict=True))
            for kind, fractions in (
                ("uniform", balance.fractions_before),
                ("balanced", balance.fractions_after),
            )
        },
        plans={
            "balance_plan": (balance.levers.params(), balance.levers.markdown(balance.class_names))
        }
        | ({} if plan is None else {"budget_plan": (plan.params(), plan.markdown())}),
    )
    if plan is not None:
        (folder / PLAN_FILE).write_text(json.dumps(plan.to_dict(), indent=1))
    marker.write_text(run_id)
    return TrainingRun(run_id, folder)
