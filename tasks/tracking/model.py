"""The segflow model in MLflow: logged as a pyfunc model from code, fetched as a bundle."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec

from segflow.tasks.storage.bundle import ModelBundle, load_bundle

PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
# What the pyfunc model imports: segflow.tasks (for the bundle loader) and segflow.models.
_TASKS = Path(__file__).parent.parent
_PACKAGES = {"tasks": _TASKS, "models": _TASKS.parent / "models"}
_REQUIREMENTS = ["torch>=2.4", "numpy", "mlflow>=3"]


def log_bundle_model(
    bundle_dir: Path,
    *,
    in_channels: int,
    out_channels: int,
    registered_name: str | None,
    alias: str | None = "newest",
) -> ModelInfo:
    """Log the bundle as a pyfunc model (from code) in the active run; register it under
    `registered_name` and point `alias` at the new version (None: give it no alias)."""
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out_channels, -1, -1))]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The model carries segflow's code (no pickle), without bytecode caches.
        code = Path(tmp) / "segflow"
        for name, source in _PACKAGES.items():
            shutil.copytree(source, code / name, ignore=shutil.ignore_patterns("__pycache__"))
        with warnings.catch_warnings():
            # The signature is explicit; an input example would fix one H x W for no gain.
            warnings.filterwarnings("ignore", message=".*input example.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(code)],
                signature=signature,
                pip_requirements=_REQUIREMENTS,
                registered_model_name=registered_name,
            )
    if registered_name and alias:
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
