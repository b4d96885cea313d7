"""The prediction store of a run as a whole: create it before the blocks, label instances after."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import zarr

from segflow.tasks.infer.sources import Source
from segflow.tasks.storage.bundle import bundle_digest, load_bundle
from segflow.tasks.storage.paths import local_path
from segflow.tasks.storage.predictions import (
    PREDICTIONS_SCHEMA_VERSION,
    create_image_arrays,
    write_instances,
)
from segflow.tasks.tracking.model import fetch_bundle
from segflow.tasks.tracking.registry import resolve_model


def _copy_bundle(root: zarr.Group, out: str, model_uri: str) -> tuple[Path, str]:
    """Fetch the model into ``out/model``; returns that folder and the bundle's SHA-256.

    Raises
    ------
    ValueError
        `out` was written by another model.
    """
    bundle = local_path(out) / "model"
    with tempfile.TemporaryDirectory() as tmp:
        fetched = fetch_bundle(model_uri, Path(tmp) / "bundle")
        digest = bundle_digest(fetched)
        previous = root.attrs.get("segflow", {}).get("model_sha256")
        if previous not in (None, digest):
            raise ValueError(
                f"{out}: was written by another model (bundle sha256 {previous[:12]}..., now "
                f"{digest[:12]}...); resuming would mix models: write to a new output"
            )
        if "model" not in root:
            root.create_group("model", attributes={"segflow": "the model bundle used"})
        shutil.copytree(fetched, bundle, dirs_exist_ok=True)
    return bundle, digest


def prepare_predictions(
    sources: list[Source], out: str, *, model_uri: str, settings: dict[str, Any]
) -> tuple[str, list[str]]:
    """Create the prediction store `out`: a copy of the model bundle, root metadata, empty
    arrays for every source (kept when a resumed store already has them).

    `settings` (the flow's config as a dict) is recorded in the metadata; its ``block`` and
    ``probability_dtype`` shape the arrays.

    Returns
    -------
    bundle, class_names
        The local bundle folder (workers load the model from it) and the model's class names.

    Raises
    ------
    ValueError
        `out` was written by another model, or a source's channels differ from the model's.
    """
    root = zarr.open_group(local_path(out), mode="a")
    bundle, digest = _copy_bundle(root, out, model_uri)
    model = load_bundle(bundle)
    classes = model.config.num_classes
    bad = [s.name for s in sources if s.shape[0] != model.config.in_channels]
    if bad:
        raise ValueError(
            f"the model takes {model.config.in_channels} channels; these inputs have others: "
            f"{bad[:5]}"
        )
    meta = dict(root.attrs.get("segflow", {}))
    meta.update(
        {
            "schema_version": PREDICTIONS_SCHEMA_VERSION,
            "kind": "predictions",
            "model_uri": model_uri,
            "model": resolve_model(model_uri).to_dict(),
            "model_sha256": digest,
            "settings": settings,
            "class_names": list(model.class_names),
            "binary_class": model.metadata.get("binary_class"),
        }
    )
    root.attrs["segflow"] = meta
    for source in sources:
        create_image_arrays(
            out,
            source.name,
            shape=source.shape[1:],
            classes=classes,
            block=settings["block"],
            probability_dtype=settings["probability_dtype"],
            attrs={"source": source.path, "key": source.key, "model_uri": model_uri},
        )
    return str(bundle), list(model.class_names)


def label_instances(out: str, names: list[str], *, min_size: int, block: int) -> dict[str, int]:
    """Connected-component instance labels of each named image's mask, objects smaller than
    `min_size` pixels dropped, stored as the label ``instances`` in `block`² shards (see
    :func:`segflow.tasks.storage.predictions.write_instances`).

    Returns
    -------
    dict[str, int]
        Image name -> number of objects.
    """
    return {name: write_instances(out, name, min_size=min_size, block=block) for name in names}
