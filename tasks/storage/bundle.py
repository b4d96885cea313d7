"""A trained model on disk: U-Net config + weights-only state dicts + preprocessing, as JSON.

Loading never unpickles arbitrary objects: weights go through ``torch.load(weights_only=True)``
and everything else is JSON. This module imports torch and numpy only, so the MLflow pyfunc
wrapper can load it anywhere segflow's ``models`` and ``tasks`` packages are importable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segflow.models.ensemble import ProbabilityEnsemble
from segflow.models.unet import UNet, UNetConfig

FORMAT_VERSION = 1


MANIFEST = "segflow_model.json"


@dataclass
class ModelBundle:
    """An ensemble of U-Nets (one member for a single model) and how to feed it."""

    config: UNetConfig
    ensemble: ProbabilityEnsemble
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    metadata: dict[str, Any]

    @property
    def threshold(self) -> float:
        """The binary threshold chosen on validation at training (0.5 for older bundles)."""
        return float(self.metadata.get("threshold", 0.5))

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels ``(N, C, H, W)`` -> float32 model input (see :meth:`normalize_tensor`)."""
        pixels = torch.from_numpy(np.require(images, requirements=["C", "W"]))
        return self.normalize_tensor(pixels).numpy()

    def normalize_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Raw pixels ``(N, C, H, W)`` of any dtype, on any device -> float32 model input
        ``(x - mean) / std`` there: on a GPU only the raw pixels cross the bus, on a CPU the
        arithmetic runs in PyTorch's threads."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(shape)
        return (images.to(torch.float32) - mean).div_(std)

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels ``(N, C, H, W)`` of any H, W -> probabilities ``(N, K, H, W)`` float32."""
        self.ensemble.eval()
        return self.ensemble(torch.from_numpy(self.normalize(images))).numpy()


def save_bundle(
    path: Path,
    *,
    config: UNetConfig,
    state_dicts: Sequence[Mapping[str, torch.Tensor]],
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the bundle folder: ``segflow_model.json`` and ``member_<k>.pt`` per member."""
    path.mkdir(parents=True, exist_ok=True)
    members = []
    for k, state in enumerate(state_dicts):
        name = f"member_{k}.pt"
        torch.save({key: value.detach().cpu() for key, value in state.items()}, path / name)
        members.append(name)
    manifest = {
        "format_version": FORMAT_VERSION,
        "unet": config.to_dict(),
        "members": members,
        "normalization": {"mean": list(mean), "std": list(std)},
        "class_names": list(class_names),
        "metadata": dict(metadata or {}),
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def load_bundle(path: str | Path) -> ModelBundle:
    """Rebuild the ensemble from a bundle folder.

    Raises
    ------
    ValueError
        Missing or foreign manifest, or a format version this code does not read.
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no {MANIFEST}; not a segflow model bundle") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: model format {manifest.get('format_version')}, expected {FORMAT_VERSION}"
        )
    config = UNetConfig.from_dict(manifest["unet"])
    members = []
    for name in manifest["members"]:
        model = UNet(config)
        model.load_state_dict(torch.load(path / name, map_location="cpu", weights_only=True))
        members.append(model.eval())
    norm = manifest["normalization"]
    return ModelBundle(
        config=config,
        ensemble=ProbabilityEnsemble(members),
        mean=tuple(norm["mean"]),
        std=tuple(norm["std"]),
        class_names=tuple(manifest["class_names"]),
        metadata=manifest["metadata"],
    )


def bundle_digest(folder: Path) -> str:
    """SHA-256 over the bundle's files (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != "zarr.json":
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
