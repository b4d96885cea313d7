"""What an evaluation covers: the prediction store checked against the truth, block by block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zarr

from segflow.tasks.evaluate.scoring import Layout
from segflow.tasks.storage.dataset import Dataset, open_dataset
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import LineageError, block_done, recorded_lineage
from segflow.tasks.storage.urls import open_group


@dataclass(frozen=True)
class Plan:
    """What to evaluate: images, their blocks, and the class layout."""

    predictions: str
    store: str
    split: str | None
    names: tuple[str, ...]
    regions: dict[str, list[tuple[int, int, int, int]]]
    layout: Layout
    meta: dict[str, Any]  # the prediction store's ``segflow`` attributes

    @property
    def jobs(self) -> list[tuple[str, tuple[int, int, int, int]]]:
        """Every ``(image, (y0, y1, x0, x1))`` block, image by image."""
        return [(name, region) for name in self.names for region in self.regions[name]]


def plan_evaluation(predictions: str, store: str, split: str | None) -> Plan:
    """Check that `predictions` cover every sample of `split` of `store` completely, were
    predicted from the same pixels as the truth's images, and have matching classes and
    geometry; return the blocks to evaluate.

    Raises
    ------
    ValueError
        Not a prediction store, other classes, a missing image, one predicted from another
        image or with no lineage recorded (:func:`check_same_pixels`), a differently sized
        image, or blocks not yet written (with the command that finishes them).
    """
    try:
        root = open_group(predictions)
    except FileNotFoundError:
        raise ValueError(f"{predictions}: no prediction store here") from None
    meta = dict(root.attrs.get("segflow", {}))
    if meta.get("kind") != "predictions":
        raise ValueError(f"{predictions}: not a segflow prediction store")
    dataset = open_dataset(store)
    names = tuple(dataset.samples(split))
    if not names:
        raise ValueError(f"{store}: no samples in split {split!r}")
    missing = [n for n in names if n not in root]
    if missing:
        raise ValueError(
            f"{predictions}: no predictions for {len(missing)} of {len(names)} samples "
            f"({', '.join(missing[:5])}...); run `segflow infer {store} {predictions}"
            + (f" --split {split}`" if split else "`")
        )
    layout = _layout(meta, dataset.class_names, predictions, store)
    for name in names:
        check_same_pixels(root, dataset, name, predictions, split)
    regions = {}
    for name in names:
        probs = root[f"{name}/0"]
        truth = dataset.mask(name)
        if probs.shape[1:] != truth.shape:
            raise ValueError(
                f"{predictions}/{name}: predictions are {probs.shape[1:]}, the truth in {store} "
                f"is {truth.shape}"
            )
        if str(probs.dtype) != layout.dtype or probs.shards[1] != layout.block:
            raise ValueError(f"{predictions}/{name}: stored unlike the other images")
        regions[name] = blocks(truth.shape, layout.block)
        undone = [r for r in regions[name] if not block_done(predictions, name, r, layout.block)]
        if undone:
            raise ValueError(
                f"{predictions}/{name}: {len(undone)} of {len(regions[name])} blocks not "
                "written yet; re-run the same `segflow infer` command to finish them"
            )
    return Plan(predictions, store, split, names, regions, layout, meta)


def check_same_pixels(
    root: zarr.Group, dataset: Dataset, name: str, predictions: str, split: str | None
) -> None:
    """Refuse predictions of image `name` made from other pixels than the truth's image: the
    sha256 recorded by ``segflow infer`` must equal the one `dataset` records for `name`.

    Raises
    ------
    LineageError
        The checksums differ, or the image records no lineage (a store written before segflow
        recorded it); both name the command that predicts the truth's images.
    """
    rerun = f"`segflow infer {dataset.path} NEW_OUTPUT" + (f" --split {split}`" if split else "`")
    lineage = recorded_lineage(root, name)
    if lineage is None:
        raise LineageError(
            f"{predictions}/{name}: records no lineage (written before segflow checked which "
            f"image predictions were made from), so it cannot be scored; run {rerun}"
        )
    truth = dataset.image(name).attrs["sha256"]
    if lineage["sha256"] != truth:
        raise LineageError(
            f"{predictions}/{name}: predicted from an image with sha256 {lineage['sha256']}, but "
            f"{name} in {dataset.path} has sha256 {truth}: these are predictions of other "
            f"pixels; run {rerun}"
        )


def _layout(meta: dict, store_classes: list[str], predictions: str, store: str) -> Layout:
    model_classes = list(meta.get("class_names", []))
    if model_classes != store_classes:
        raise ValueError(
            f"{predictions}: the model's classes {model_classes} are not the classes of "
            f"{store} {store_classes}"
        )
    settings = meta.get("settings", {})
    dtype, block = settings.get("probability_dtype"), settings.get("block")
    binary = meta.get("binary_class")
    if binary is None and len(store_classes) == 2:
        binary = 1
    if binary is None:
        return Layout(tuple(store_classes), None, dtype, block)
    name = store_classes[binary]
    return Layout((f"not {name}" if binary != 1 else store_classes[0], name), binary, dtype, block)


def evaluation_key(store_fingerprint: str, split: str | None) -> str:
    """Identifies the evaluated pixels: scores are comparable only under equal keys."""
    return f"{store_fingerprint[:16]}:{split or 'all'}"
