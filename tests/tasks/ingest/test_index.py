"""The store's index records the source's split and where it came from (issue 15)."""

from __future__ import annotations

import numpy as np

from segflow.tasks.ingest.index import build_index
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import PairLayout, find_pairs
from segflow.tasks.ingest.samples import SampleChecks, ingest_pair
from segflow.tasks.ingest.source_split import SourceSplit, source_split
from segflow.tasks.storage.dataset_writer import init_store
from segflow.tasks.storage.image_io import SizeLimits
from tests.images import make_source, random_image, random_mask, save

LAYOUT = PairLayout(images_dir="images", masks_dir="masks", mask_suffix="")
FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}
CHECKS = SampleChecks(SizeLimits(10**9, 10**9), image_format=None)
BINARY = MaskRules(num_classes=2, foreground_value=None, invert=False)


def add_pairs(folder, stems, seed=0):
    """Grey image/mask pairs named `stems` under folder/images and folder/masks."""
    rng = np.random.default_rng(seed)
    for stem in stems:
        save(folder / "images" / f"{stem}.png", random_image(rng, (24, 32)))
        save(folder / "masks" / f"{stem}.png", random_mask(rng, (24, 32)))


def ingest(source, store, split_file=None, seed=0):
    """What the flow does, without Prefect: pairs, their split, samples, index."""
    pairs, rejected = find_pairs(source, LAYOUT)
    given = source_split(str(source), pairs, split_file)
    init_store(store, class_names=("background", "foreground"))
    for pair in pairs:
        ingest_pair(pair, store, rules=BINARY, checks=CHECKS)
    return build_index(store, rejected=rejected, fractions=FRACTIONS, seed=seed, source_split=given)


def test_split_folders_are_the_split_and_val_is_drawn_from_train(tmp_path):
    source = tmp_path / "src"
    make_source(source / "train", n=8, seed=1)
    add_pairs(source / "test", ["t0", "t1", "t2"])
    index = ingest(source, tmp_path / "ds.zarr")
    assert index["split_source"] == "folders"
    assert index["split"]["test"] == ["t0", "t1", "t2"]
    assert len(index["split"]["val"]) == 2  # a quarter of the 8 train samples
    assert sorted(index["split"]["train"] + index["split"]["val"]) == [
        f"s{i:02d}" for i in range(8)
    ]


def test_a_reingest_keeps_every_split_and_records_the_file(tmp_path):
    source = make_source(tmp_path / "src", n=8)
    split_file = tmp_path / "split.csv"
    split_file.write_text("id,split\ns00,test\ns01,train\n")
    store = tmp_path / "ds.zarr"
    first = ingest(source, store, str(split_file))
    assert first["split_source"] == f"file:{split_file.resolve()}"
    assert "s00" in first["split"]["test"] and "s01" in first["split"]["train"]
    add_pairs(source, ["s08", "s09", "s10", "s11"])
    second = ingest(source, store, str(split_file))
    for name, ids in first["split"].items():
        assert set(ids) <= set(second["split"][name]), name
    assert sum(map(len, second["split"].values())) == 12


def test_without_a_source_split_the_fractions_split_is_recorded_as_such(tmp_path):
    index = ingest(make_source(tmp_path / "src", n=4), tmp_path / "ds.zarr")
    assert index["split_source"] == SourceSplit().origin == "fractions"
    assert sum(map(len, index["split"].values())) == 4
