"""Checks of a command's paths, stores and model before any server, cluster or lock starts.

A mistake found here ends the command in one line (:class:`UsageError`, exit status 2) and
nothing is created: the checks only read. The flows keep their own checks; these run first so
that a user does not wait for Prefect to learn that a path is misspelt.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from segflow.flows.config import EvaluateConfig, InferConfig, IngestConfig, TrainConfig
from segflow.flows.errors import UsageError
from segflow.tasks.storage import urls

_MAKE_STORE = "make one with `segflow ingest SRC STORE`"
_MAKE_MODEL = "train one with `segflow train STORE`, or run `segflow demo`"


def check_dataset_store(path: str, role: str) -> None:
    """Raise :class:`UsageError` unless `path` is a segflow dataset store; `role` names it."""
    from segflow.tasks.storage.dataset import open_dataset

    check_reachable(path, role)
    if not urls.exists(path):
        raise UsageError(f"{role} {path} does not exist ({_MAKE_STORE})")
    try:
        open_dataset(path)
    except ValueError as exc:
        raise UsageError(f"{role} {exc} ({_MAKE_STORE})") from None


def check_reachable(location: str, role: str) -> None:
    """Raise :class:`UsageError` when `location` is a URL whose storage does not answer."""
    if problem := urls.reach_problem(location):
        raise UsageError(f"{role} {problem}")


def check_source(config: IngestConfig) -> None:
    """Raise :class:`UsageError` unless the ingest source has a known layout (images/ and
    masks/, or split folders with no sample id twice) and a good split file, if one is given.
    """
    from segflow.tasks.ingest.pairs import find_pairs
    from segflow.tasks.ingest.source_split import source_split

    check_reachable(config.source, "source")
    try:
        pairs, _ = find_pairs(config.source, config.pair_layout())
        source_split(config.source, pairs, config.split_file)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _check_writable_store(path: str, role: str) -> None:
    """A store to write: absent or a folder (or a reachable URL). What an existing folder holds
    is the writer's to judge (a store that a killed ingest left half-initialised is resumed,
    not refused)."""
    check_reachable(path, role)
    if urls.is_remote(path):
        return
    if Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"{role} {path} is a file (give a new or existing store folder)")


def tracking_uri(workdir: str) -> str | None:
    """The MLflow tracking URI a command would use, or None when its SQLite database (the
    default, in `workdir`) does not exist yet: then no model is registered there."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    database = Path(workdir) / "mlflow.db"
    return f"sqlite:///{database.resolve()}" if database.is_file() else None


def check_model(model: str, workdir: str) -> None:
    """Raise :class:`UsageError` unless `model` names a registered model version, an MLflow
    run's model, or an existing bundle folder."""
    if model.startswith("runs:/"):
        return  # resolved by MLflow itself, with its own one-line error
    if not model.startswith("models:/"):
        if not Path(model).is_dir():
            raise UsageError(f"model {model} is neither a models:/ URI nor a bundle folder")
        return
    uri = tracking_uri(workdir)
    if uri is None:
        database = Path(workdir) / "mlflow.db"
        raise UsageError(f"model {model}: no MLflow database at {database} ({_MAKE_MODEL})")
    from segflow.tasks.tracking.registry import model_uri_problem

    if problem := model_uri_problem(model, uri):
        raise UsageError(f"model {model}: {problem} ({_MAKE_MODEL})")


def _check_infer_input(config: InferConfig) -> None:
    from segflow.tasks.infer.sources import find_sources

    check_reachable(config.input, "input")
    try:
        find_sources(config.input, split=config.split, limits=config.size_limits())
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"input {exc.args[0] if exc.args else exc}") from None


def check_config(config: BaseModel) -> None:
    """Check what a stage command's `config` names before the stage starts.

    Raises
    ------
    UsageError
        A path that does not exist or is of the wrong kind, a store that is not a segflow
        store, a model that is not registered (with those that are), a bad split file.
    """
    urls.use_options(getattr(config, "storage_options", {}))
    if isinstance(config, IngestConfig):
        check_source(config)
        _check_writable_store(config.store, "store")
    elif isinstance(config, TrainConfig):
        check_dataset_store(config.store, "store")
    elif isinstance(config, InferConfig):
        _check_infer_input(config)
        check_model(config.model, config.workdir)
        _check_writable_store(config.output, "output")
    elif isinstance(config, EvaluateConfig):
        check_reachable(config.predictions, "predictions")
        if not urls.exists(config.predictions, "zarr.json"):
            raise UsageError(
                f"predictions {config.predictions}: no prediction store here "
                "(make one with `segflow infer INPUT OUT`)"
            )
        check_dataset_store(config.store, "store")
