"""The prediction store of a run as a whole: create it before the blocks, label instances after."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import zarr

from segflow.tasks.infer.sources import Source
from segflow.tasks.storage.bundle import ModelBundle, bundle_digest, load_bundle
from segflow.tasks.storage.dataset import Dataset, dataset_fingerprint, open_dataset
from segflow.tasks.storage.image_io import sha256_file
from segflow.tasks.storage.predictions import (
    PREDICTIONS_SCHEMA_VERSION,
    check_lineage,
    check_schema,
    create_image_arrays,
    write_instances,
)
from segflow.tasks.storage.pyramid import write_pyramid
from segflow.tasks.storage.stored_bundle import bundle_cache, extract_bundle, store_bundle
from segflow.tasks.storage.urls import filesystem, open_group, zarr_store
from segflow.tasks.tracking.model import fetch_bundle
from segflow.tasks.tracking.registry import resolve_model


def zarr_sha256(path: str) -> str:
    """The checksum of a Zarr array input: its ``sha256`` attribute where it has one (the
    arrays of a dataset store carry their source file's), else a SHA-256 over every file of the
    array (metadata and encoded chunks, by relative path), streamed without decoding."""
    recorded = zarr.open_array(zarr_store(path, read_only=True), mode="r").attrs.get("sha256")
    if isinstance(recorded, str):
        return recorded
    fs, root = filesystem(path)
    digest = hashlib.sha256()
    for file in sorted(fs.find(root)):
        with fs.open(file, "rb") as stream:
            sha = hashlib.file_digest(stream, "sha256").hexdigest()
        digest.update(f"{file[len(root.rstrip('/')) + 1 :]}:{sha};".encode())
    return digest.hexdigest()


def input_lineage(sources: list[Source]) -> dict[str, dict[str, Any]]:
    """What each source's pixels are, by name: ``kind``, ``sha256`` and ``dataset_sha256``.

    A dataset store image has the sha256 its store records (that of the file it was ingested
    from) and the store's content hash (:func:`~segflow.tasks.storage.dataset.dataset_fingerprint`);
    an image file the sha256 of its bytes, streamed; a Zarr array :func:`zarr_sha256`.
    """
    datasets: dict[str, tuple[Dataset, str]] = {}
    lineage = {}
    for source in sources:
        if source.kind == "store":
            if source.path not in datasets:
                dataset = open_dataset(source.path)
                datasets[source.path] = dataset, dataset_fingerprint(dataset)
            dataset, fingerprint = datasets[source.path]
            sha, kind = dataset.image(source.key).attrs["sha256"], "store"
        else:
            fingerprint = None
            kind = "zarr" if source.kind == "zarr" else "file"
            sha = zarr_sha256(source.path) if kind == "zarr" else sha256_file(source.path)
        lineage[source.name] = {"kind": kind, "sha256": sha, "dataset_sha256": fingerprint}
    return lineage


def _copy_bundle(root: zarr.Group, out: str, model_uri: str) -> tuple[Path, str]:
    """Fetch the model into ``out/model`` (as Zarr arrays) and extract it into this machine's
    cache; returns that folder and the bundle's SHA-256.

    Raises
    ------
    ValueError
        `out` was written by another model.
    """
    with tempfile.TemporaryDirectory() as tmp:
        fetched = fetch_bundle(model_uri, Path(tmp) / "bundle")
        digest = bundle_digest(fetched)
        previous = root.attrs.get("segflow", {}).get("model_sha256")
        if previous not in (None, digest):
            raise ValueError(
                f"{out}: was written by another model (bundle sha256 {previous[:12]}..., now "
                f"{digest[:12]}...); resuming would mix models: write to a new output"
            )
        if previous is None:
            store_bundle(root, fetched)
    return extract_bundle(out, bundle_cache(digest), digest), digest


def _store_meta(
    model: ModelBundle, model_uri: str, digest: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """The prediction store's root ``segflow`` attributes for `model`."""
    return {
        "schema_version": PREDICTIONS_SCHEMA_VERSION,
        "kind": "predictions",
        "model_uri": model_uri,
        "model": resolve_model(model_uri).to_dict(),
        "model_sha256": digest,
        # The threshold the blocks are written with: the model's unless one was given.
        "settings": settings | {"threshold": settings.get("threshold") or model.threshold},
        "class_names": list(model.class_names),
        "binary_class": model.metadata.get("binary_class"),
    }


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
        This machine's copy of the bundle (a worker without it extracts it from the store) and
        the model's class names.

    Each image records its :func:`input_lineage`, which evaluation checks against the truth.

    Raises
    ------
    ValueError
        `out` was written by another model or holds an image predicted from other pixels than
        its source now has (:func:`~segflow.tasks.storage.predictions.check_lineage`), or a
        source's channels differ from the model's.
    """
    lineage = input_lineage(sources)
    check_schema(out)  # before anything is written
    check_lineage(out, lineage)
    root = open_group(out, mode="a")
    bundle, digest = _copy_bundle(root, out, model_uri)
    model = load_bundle(bundle)
    classes = model.config.num_classes
    bad = [s.name for s in sources if s.shape[0] != model.config.in_channels]
    if bad:
        raise ValueError(
            f"the model takes {model.config.in_channels} channels; these inputs have others: "
            f"{bad[:5]}"
        )
    root.attrs["segflow"] = dict(root.attrs.get("segflow", {})) | _store_meta(
        model, model_uri, digest, settings
    )
    for source in sources:
        create_image_arrays(
            out,
            source.name,
            shape=source.shape[1:],
            class_names=model.class_names,
            classes=classes,
            block=settings["block"],
            probability_dtype=settings["probability_dtype"],
            attrs={
                "source": source.path,
                "key": source.key,
                "model_uri": model_uri,
                "lineage": lineage[source.name],
            },
        )
    return str(bundle), list(model.class_names)


def label_instances(out: str, names: list[str], *, min_size: int, block: int) -> dict[str, int]:
    """Connected-component instance labels of each named image's mask, block by block (a few
    blocks in memory), objects smaller than `min_size` pixels dropped, stored as the label
    ``instances`` in `block`² shards (see
    :func:`segflow.tasks.storage.predictions.write_instances`).

    Returns
    -------
    dict[str, int]
        Image name -> number of objects.
    """
    return {name: write_instances(out, name, min_size=min_size, block=block) for name in names}


def build_pyramids(out: str, names: list[str], *, block: int) -> dict[str, int]:
    """Write the pyramid levels of each named image (all its blocks predicted), block by
    block; levels already written are kept (see
    :func:`segflow.tasks.storage.pyramid.write_pyramid`).

    Returns
    -------
    dict[str, int]
        Image name -> level blocks written now.
    """
    return {name: write_pyramid(out, name, block) for name in names}
