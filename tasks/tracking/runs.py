"""MLflow runs: where they go and what a run records as params and metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow


def configure_tracking(workdir: Path, experiment: str) -> str:
    """Use ``MLFLOW_TRACKING_URI`` if set, else a SQLite database and artifact folder in
    `workdir`; select (create) `experiment`. Returns the tracking URI."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        workdir.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(f"sqlite:///{(workdir / 'mlflow.db').resolve()}")
        if mlflow.get_experiment_by_name(experiment) is None:
            location = (workdir / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
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


def log_class_distribution(prefix: str, fractions: Sequence[float], names: Sequence[str]) -> None:
    """Log per-class pixel fractions as metrics ``<prefix>.<class>``."""
    mlflow.log_metrics({f"{prefix}.{n}": float(f) for n, f in zip(names, fractions, strict=True)})
