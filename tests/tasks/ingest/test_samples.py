"""Ingest of single pairs and the store index, without Prefect."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segflow.tasks.ingest.index import build_index
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import Pair, PairLayout, find_pairs
from segflow.tasks.ingest.samples import SampleChecks, ingest_pair
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import committed_samples, init_store
from segflow.tasks.storage.image_io import SizeLimits
from tests.images import make_source, random_image, random_mask, save

BINARY = MaskRules(num_classes=2, foreground_value=None, invert=False)
CLASSES = ("background", "foreground")
UNLIMITED = SampleChecks(SizeLimits(10**9, 10**9), image_format=None)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.zarr"
    init_store(path, class_names=CLASSES)
    return path


def ingest(pair, store, rules=BINARY, **kwargs):
    stored = committed_samples(store).get(pair.sample_id)
    return ingest_pair(pair, store, rules=rules, checks=UNLIMITED, stored=stored, **kwargs)


def pair_of(tmp_path, image, mask, image_name="a.png", mask_name="a.png", **tiff):
    image_path = save(tmp_path / "src" / "images" / image_name, image, **tiff)
    mask_path = save(tmp_path / "src" / "masks" / mask_name, mask)
    return Pair(image_path.stem, image_path, mask_path)


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "tiff"),
    [
        ("a.png", (37, 51), "uint8", {}),
        ("a.png", (37, 51), "uint16", {}),
        ("a.png", (37, 51, 3), "uint8", {}),
        ("a.png", (37, 51, 4), "uint8", {}),
        ("a.tif", (37, 51), "uint16", {}),
        ("a.tif", (37, 51, 3), "uint8", {"compression": "zlib"}),
        ("a.tiff", (300, 270, 3), "uint16", {"bigtiff": True, "tile": (64, 64)}),
    ],
)
def test_round_trip_is_pixel_exact(tmp_path, store, name, shape, dtype, tiff):
    rng = np.random.default_rng(1)
    image = random_image(rng, shape, dtype)
    mask = random_mask(rng, shape[:2])
    pair = pair_of(tmp_path, image, mask, image_name=name, **tiff)
    assert ingest(pair, store).status == "written"
    stored = open_dataset(store)
    expected = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    np.testing.assert_array_equal(stored.image("a")[...], expected)
    assert stored.image("a").dtype == np.dtype(dtype)
    np.testing.assert_array_equal(stored.mask("a")[...], (mask == 255).astype(np.uint8))
    assert stored.class_counts("a") == [int((mask == 0).sum()), int((mask == 255).sum())]
    attrs = stored.image("a").attrs
    assert attrs["source"] == str(pair.image) and len(attrs["sha256"]) == 64


def test_jpeg_image_matches_its_decoded_pixels(tmp_path, store):
    rng = np.random.default_rng(2)
    pair = pair_of(
        tmp_path, random_image(rng, (33, 47, 3)), random_mask(rng, (33, 47)), image_name="a.jpg"
    )
    assert ingest(pair, store).status == "written"
    decoded = np.moveaxis(np.asarray(Image.open(pair.image)), -1, 0)
    np.testing.assert_array_equal(open_dataset(store).image("a")[...], decoded)


@pytest.mark.parametrize(
    ("values", "rules", "expected"),
    [
        ((0, 1), BINARY, {0: 0, 1: 1}),
        ((0, 255), MaskRules(2, foreground_value=0, invert=False), {0: 1, 255: 0}),
        ((0, 255), MaskRules(2, foreground_value=None, invert=True), {0: 1, 255: 0}),
        ((0, 1, 2, 3), MaskRules(4, foreground_value=None, invert=False), {0: 0, 1: 1, 2: 2, 3: 3}),
    ],
)
def test_mask_values_become_class_ids(tmp_path, store, values, rules, expected):
    rng = np.random.default_rng(3)
    mask = random_mask(rng, (20, 30), values=values, p=0.5)
    pair = pair_of(tmp_path, random_image(rng, (20, 30)), mask)
    assert ingest(pair, store, rules).status == "written"
    stored = open_dataset(store).mask("a")[...]
    np.testing.assert_array_equal(stored, np.vectorize(expected.get)(mask).astype(np.uint8))


def test_grey_rgb_mask_is_accepted_colour_mask_rejected(tmp_path, store):
    rng = np.random.default_rng(4)
    grey = random_mask(rng, (20, 30))
    pair = pair_of(tmp_path, random_image(rng, (20, 30)), np.stack([grey] * 3, -1))
    assert ingest(pair, store).status == "written"
    colour = np.stack([grey, grey, np.zeros_like(grey)], -1)
    bad = pair_of(tmp_path, random_image(rng, (20, 30)), colour, "b.png", "b.png")
    outcome = ingest(bad, store)
    assert outcome.status == "rejected" and "differing channels" in outcome.reason


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate-image", "truncated"),
        ("truncate-jpeg", "truncated"),
        ("garbage-mask", "unreadable"),
        ("size-mismatch", "mask is 20x31 but image a.png is 20x30"),
        ("mask-values", "mask values [7]"),
        ("too-many-pixels", "exceeds max_pixels"),
    ],
)
def test_bad_pair_is_rejected_naming_the_file(tmp_path, store, damage, message):
    rng = np.random.default_rng(5)
    image, mask = random_image(rng, (20, 30)), random_mask(rng, (20, 30))
    name = "a.jpg" if damage == "truncate-jpeg" else "a.png"
    pair = pair_of(tmp_path, image, mask, image_name=name)
    bad_file = pair.image
    if damage.startswith("truncate"):
        _truncate(pair.image)
    elif damage == "garbage-mask":
        pair.mask.write_bytes(b"not a png at all")
        bad_file = pair.mask
    elif damage == "size-mismatch":
        save(pair.mask, random_mask(rng, (20, 31)))
        bad_file = pair.mask
    elif damage == "mask-values":
        mask[0, 0] = 7
        save(pair.mask, mask)
        bad_file = pair.mask
    max_pixels = 599 if damage == "too-many-pixels" else 10**9
    checks = SampleChecks(SizeLimits(max_pixels, max_pixels), image_format=None)
    outcome = ingest_pair(pair, store, rules=BINARY, checks=checks)
    assert outcome.status == "rejected"
    assert outcome.path == str(bad_file)
    assert message in outcome.reason
    assert committed_samples(store) == {}


def test_bad_new_version_leaves_stored_sample_untouched(tmp_path, store):
    rng = np.random.default_rng(6)
    image, mask = random_image(rng, (20, 30)), random_mask(rng, (20, 30))
    pair = pair_of(tmp_path, image, mask)
    assert ingest(pair, store).status == "written"
    _truncate(pair.image)
    assert ingest(pair, store).status == "rejected"
    np.testing.assert_array_equal(open_dataset(store).image("a")[0], image)


def test_rerun_skips_unchanged_and_rewrites_changed(tmp_path, store):
    rng = np.random.default_rng(7)
    pair = pair_of(tmp_path, random_image(rng, (20, 30)), random_mask(rng, (20, 30)))
    assert ingest(pair, store).status == "written"
    assert ingest(pair, store).status == "unchanged"
    new_image = random_image(rng, (20, 30))
    save(pair.image, new_image)
    assert ingest(pair, store).status == "written"
    np.testing.assert_array_equal(open_dataset(store).image("a")[0], new_image)
    assert list(committed_samples(store)) == ["a"]


def test_half_swapped_sample_is_not_committed(tmp_path, store):
    """A crash between the image and the mask rename leaves a pair that must be re-ingested."""
    rng = np.random.default_rng(8)
    pair = pair_of(tmp_path, random_image(rng, (20, 30)), random_mask(rng, (20, 30)))
    ingest(pair, store)
    import zarr

    image = zarr.open_array(store / "images" / "a", mode="r+")
    image.attrs["sha256"] = "0" * 64  # as if a newer image was renamed in but not its mask
    assert committed_samples(store) == {}
    assert ingest(pair, store).status == "written"
    assert list(committed_samples(store)) == ["a"]


def test_large_tiff_is_streamed_region_by_region(tmp_path, store):
    rng = np.random.default_rng(9)
    image = random_image(rng, (1100, 1300, 3))
    mask = random_mask(rng, (1100, 1300))
    image_path = save(
        tmp_path / "src/images/big.tif", image, bigtiff=True, tile=(256, 256), compression="zlib"
    )
    mask_path = save(tmp_path / "src/masks/big.tif", mask, tile=(256, 256))
    pair = Pair("big", image_path, mask_path)
    outcome = ingest_pair(
        pair, store, rules=BINARY, checks=UNLIMITED, stream_pixels=10_000, workers=2
    )
    assert outcome.status == "written"
    stored = open_dataset(store)
    np.testing.assert_array_equal(stored.image("big")[...], np.moveaxis(image, -1, 0))
    np.testing.assert_array_equal(stored.mask("big")[...], (mask == 255).astype(np.uint8))
    assert stored.class_counts("big") == [int((mask == 0).sum()), int((mask == 255).sum())]
    assert stored.image("big").shards == (3, 1024, 1024)


def test_large_tiff_with_bad_mask_values_is_rejected(tmp_path, store):
    rng = np.random.default_rng(10)
    mask = random_mask(rng, (300, 300))
    mask[5, 5] = 9
    image_path = save(
        tmp_path / "src/images/big.tif", random_image(rng, (300, 300)), tile=(128, 128)
    )
    mask_path = save(tmp_path / "src/masks/big.tif", mask, tile=(128, 128))
    outcome = ingest_pair(
        Pair("big", image_path, mask_path),
        store,
        rules=BINARY,
        checks=UNLIMITED,
        stream_pixels=1000,
    )
    assert outcome.status == "rejected" and "[9]" in outcome.reason
    assert committed_samples(store) == {}


def test_index_records_split_and_rejections(tmp_path, store):
    source = make_source(tmp_path / "src", n=10, empty=3)
    (source / "images" / "notes.txt").write_text("hello")
    pairs, rejected = find_pairs(source, PairLayout("images", "masks", ""))
    for pair in pairs:
        ingest(pair, store)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    index = build_index(store, rejected=rejected, fractions=fractions, seed=0)
    dataset = open_dataset(store)
    assert sorted(dataset.samples()) == [p.sample_id for p in pairs]
    assert {k: len(v) for k, v in index["split"].items()} == {"train": 6, "val": 2, "test": 2}
    for name in ("train", "val", "test"):
        assert any(dataset.class_counts(s)[1] > 0 for s in dataset.samples(name)), name
    assert dataset.rejected == [
        {"path": str(source / "images" / "notes.txt"), "reason": dataset.rejected[0]["reason"]}
    ]
    assert "not an image file" in dataset.rejected[0]["reason"]
    assert dataset.meta["class_counts"] == [
        sum(dataset.class_counts(s)[c] for s in dataset.samples()) for c in (0, 1)
    ]


def test_store_refuses_other_classes(store):
    with pytest.raises(ValueError, match="holds classes"):
        init_store(store, class_names=("bg", "a", "b"))


def test_store_refuses_foreign_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a Zarr store"):
        init_store(tmp_path / "data", class_names=CLASSES)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
