"""Ingest guards: size limits checked on the headers before decoding, one image format per
store, recorded in the store's root attributes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import segflow.tasks.ingest.samples as samples_module
from segflow.flows.config import IngestConfig
from segflow.tasks.ingest.index import build_index
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import Pair, PairLayout, find_pairs
from segflow.tasks.ingest.samples import SampleChecks, ingest_pair, sample_checks
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import committed_samples, init_store
from segflow.tasks.storage.image_io import ImageFormat
from tests.images import crafted_jpeg, crafted_png, crafted_tiff, random_image, random_mask, save

BINARY = MaskRules(num_classes=2, foreground_value=None, invert=False)
LIMITS = IngestConfig(source="src", store="ds.zarr").size_limits()  # the defaults
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "ds.zarr"
    init_store(path, class_names=("background", "foreground"))
    return path


CRAFTED = {
    "png": lambda d, n: crafted_png(d / f"{n}.png", 13000, 13000),
    "jpeg": lambda d, n: crafted_jpeg(d / f"{n}.jpg", 65000, 65000),
    "tiled-tiff": lambda d, n: crafted_tiff(d / f"{n}.tif", 60000, 60000, tiled=True),
}


@pytest.mark.parametrize("kind", CRAFTED)
def test_bomb_pairs_are_rejected_before_decoding(tmp_path, store, monkeypatch, kind):
    """A pair whose headers declare a huge image is rejected naming the image, its size, the
    limit and the option; neither file is decoded (eagerly or lazily)."""
    image = CRAFTED[kind](tmp_path / "images", "a")
    mask = CRAFTED[kind](tmp_path / "masks", "a")

    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(samples_module, "read_image", refuse)
    monkeypatch.setattr(samples_module, "open_lazy", refuse)
    checks = SampleChecks(LIMITS, image_format=None)
    outcome = ingest_pair(Pair("a", image, mask), store, rules=BINARY, checks=checks)
    assert outcome.status == "rejected" and outcome.path == str(image)
    option = "--max-tiled-pixels" if kind == "tiled-tiff" else "--max-pixels"
    assert "declares" in outcome.reason and f"raise {option}" in outcome.reason
    assert committed_samples(store) == {}


def _pair(root, name, image, mask_shape=None):
    rng = np.random.default_rng(len(name))
    image_path = save(root / "images" / name, image)
    mask = random_mask(rng, mask_shape or image.shape[:2])
    save(root / "masks" / f"{image_path.stem}.png", mask)
    return image_path


def test_first_ingest_takes_the_format_of_most_images_and_records_it(tmp_path, store):
    """An RGBA PNG and a 16-bit TIFF among grey PNGs: both rejected naming the store's format
    and their own, the grey ones stored, and the format recorded in the root attributes."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for i in range(3):
        _pair(src, f"grey{i}.png", random_image(rng, (20, 30)))
    rgba = _pair(src, "rgba.png", random_image(rng, (20, 30, 4)))
    deep = _pair(src, "deep.tif", random_image(rng, (20, 30), "uint16"))
    pairs, rejected = find_pairs(src, PairLayout("images", "masks", ""))
    checks = sample_checks(store, pairs, committed_samples(store).keys(), LIMITS)
    assert checks.image_format == ImageFormat(1, "uint8")
    outcomes = {p.sample_id: ingest_pair(p, store, rules=BINARY, checks=checks) for p in pairs}
    assert sorted(s for s, o in outcomes.items() if o.status == "written") == [
        "grey0",
        "grey1",
        "grey2",
    ]
    assert outcomes["rgba"].path == str(rgba)
    assert outcomes["rgba"].reason.startswith(
        f"4 channels uint8, but the store {store} holds 1 channel uint8 images"
    )
    assert outcomes["deep"].path == str(deep)
    assert outcomes["deep"].reason.startswith("1 channel uint16, but the store")
    build_index(store, rejected=rejected, fractions=FRACTIONS, seed=0)
    assert open_dataset(store).meta["image_format"] == {"channels": 1, "dtype": "uint8"}


def test_a_store_keeps_its_format_and_an_old_store_takes_its_samples(tmp_path, store):
    """A store without a recorded format (written before it was) takes that of its samples,
    even when a new batch holds mostly another; the index then records it."""
    rng = np.random.default_rng(1)
    unchecked = SampleChecks(LIMITS, image_format=None)
    src = tmp_path / "src"
    first = _pair(src, "rgb.png", random_image(rng, (20, 30, 3)))
    ingest_pair(
        Pair("rgb", first, src / "masks" / "rgb.png"), store, rules=BINARY, checks=unchecked
    )
    root = zarr.open_group(store, mode="r")
    assert "image_format" not in root.attrs["segflow"]  # as a store of an earlier segflow
    for i in range(3):
        _pair(src, f"grey{i}.png", random_image(rng, (20, 30)))
    pairs, _ = find_pairs(src, PairLayout("images", "masks", ""))
    checks = sample_checks(store, pairs, committed_samples(store).keys(), LIMITS)
    assert checks.image_format == ImageFormat(3, "uint8")
    build_index(store, rejected=[], fractions=FRACTIONS, seed=0)
    assert open_dataset(store).meta["image_format"] == {"channels": 3, "dtype": "uint8"}
    grey = next(p for p in pairs if p.sample_id == "grey0")
    outcome = ingest_pair(grey, store, rules=BINARY, checks=checks)
    assert outcome.status == "rejected" and "holds 3 channels uint8 images" in outcome.reason


def test_an_empty_batch_leaves_the_format_open(tmp_path, store):
    assert sample_checks(store, [], {}.keys(), LIMITS).image_format is None
    build_index(store, rejected=[], fractions=FRACTIONS, seed=0)
    assert "image_format" not in open_dataset(store).meta
