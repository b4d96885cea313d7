"""MLflow: where runs go, what a training run records, and logging/loading the model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec

from tasks.dataset import Dataset as Store
from tasks.model_bundle import ModelBundle, load_bundle

PYFUNC_CODE = Path(__file__).with_name("mlflow_pyfunc.py")
_PACKAGES = (Path(__file__).parent, Path(__file__).parent.parent / "models")
_REQUIREMENTS = ["torch>=2.4", "numpy", "mlflow>=3"]


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


def dataset_fingerprint(store: Store) -> str:
    """SHA-256 over every sample's checksums and the split: changes iff the data does."""
    digest = hashlib.sha256()
    for sample_id in store.samples():
        digest.update(sample_id.encode())
        digest.update(store.image(sample_id).attrs["sha256"].encode())
        digest.update(store.mask(sample_id).attrs["sha256"].encode())
    digest.update(json.dumps(store.meta.get("split", {}), sort_keys=True).encode())
    return digest.hexdigest()


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Side-by-side uint8 RGB panel: image | truth in green | prediction in magenta.

    image ``(C, H, W)`` any dtype (shown min-max scaled), truth and pred ``(H, W)`` class ids.
    """
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    rgb = rgb.astype(np.float32)
    low, high = np.percentile(rgb, (1, 99))
    base = np.clip((rgb - low) / max(high - low, 1e-6), 0, 1).transpose(1, 2, 0)

    def tint(mask: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
        out = base.copy()
        out[mask > 0] = 0.5 * out[mask > 0] + 0.5 * np.asarray(colour)
        return out

    panel = np.concatenate([base, tint(truth, (0, 1, 0)), tint(pred, (1, 0, 1))], axis=1)
    return (panel * 255).astype(np.uint8)


def log_bundle_model(
    bundle_dir: Path,
    *,
    in_channels: int,
    out_channels: int,
    registered_name: str | None,
    alias: str = "newest",
) -> ModelInfo:
    """Log the bundle as a pyfunc model (from code) in the active run; register it under
    `registered_name` and point `alias` at the new version."""
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out_channels, -1, -1))]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The model carries segflow's code (no pickle), without bytecode caches.
        code = [
            shutil.copytree(p, Path(tmp) / p.name, ignore=shutil.ignore_patterns("__pycache__"))
            for p in _PACKAGES
        ]
        with warnings.catch_warnings():
            # The signature is explicit; an input example would fix one H x W for no gain.
            warnings.filterwarnings("ignore", message=".*input example.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(c) for c in code],
                signature=signature,
                pip_requirements=_REQUIREMENTS,
                registered_model_name=registered_name,
            )
    if registered_name:
        MlflowClient().set_registered_model_alias(
            registered_name, alias, info.registered_model_version
        )
    return info


def fetch_bundle(model_uri: str, dest: Path) -> Path:
    """Copy the bundle of a segflow model (any MLflow model URI, or a local bundle folder)
    into `dest`; returns `dest`."""
    with tempfile.TemporaryDirectory() as tmp:
        if Path(model_uri, "segflow_model.json").exists():
            local = model_uri
        else:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        bundles = sorted(Path(local).rglob("segflow_model.json"))
        if not bundles:
            raise ValueError(f"{model_uri}: not a segflow model (no segflow_model.json)")
        shutil.copytree(bundles[0].parent, dest, dirs_exist_ok=True)
    return dest


def load_model(model_uri: str) -> ModelBundle:
    """Load a segflow model from any MLflow model URI (``models:/name@alias``, ``runs:/...``)
    without unpickling: only its bundle artifact is read."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_bundle(fetch_bundle(model_uri, Path(tmp) / "bundle"))


def log_class_distribution(prefix: str, fractions: Sequence[float], names: Sequence[str]) -> None:
    """Log per-class pixel fractions as metrics ``<prefix>.<class>``."""
    mlflow.log_metrics({f"{prefix}.{n}": float(f) for n, f in zip(names, fractions, strict=True)})
