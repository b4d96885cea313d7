import json

import numpy as np
import pytest

from segflow.flows.cli import main
from segflow.flows.config import IngestConfig
from segflow.flows.ingest import NothingIngested, ingest_dataset
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import PairLayout
from segflow.tasks.storage.dataset import open_dataset
from tests.images import make_source


def test_flow_ingests_rejects_and_reruns_idempotently(tmp_path):
    source = make_source(tmp_path / "src", n=8, empty=2)
    (source / "images" / "s03.png").write_bytes(b"\x89PNG broken")
    (source / "masks" / "orphan.png").write_bytes(b"")
    config = IngestConfig(source=str(source), store=str(tmp_path / "ds.zarr"), workers=2)

    first = ingest_dataset(config)
    assert (first.samples, first.written, first.unchanged) == (7, 7, 0)
    assert {r["path"].split("/")[-1] for r in first.rejected} == {"s03.png", "orphan.png"}
    assert sum(first.split.values()) == 7

    second = ingest_dataset(config)
    assert (second.samples, second.written, second.unchanged) == (7, 0, 7)
    dataset = open_dataset(config.store)
    assert len(dataset.samples()) == 7 and len(dataset.rejected) == 2
    assert not (tmp_path / "ds.zarr" / ".staging").exists()


def test_flow_with_nothing_valid_fails_and_records_why(tmp_path):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    (source / "images" / "a.png").write_bytes(b"junk")
    with pytest.raises(NothingIngested) as info:
        ingest_dataset(IngestConfig(source=str(source), store=str(tmp_path / "ds.zarr")))
    assert info.value.summary.rejected[0]["reason"] == "image without mask"
    assert open_dataset(tmp_path / "ds.zarr").rejected[0]["reason"] == "image without mask"


def test_cli_json_summary_and_exit_codes(tmp_path, capsys):
    source = make_source(tmp_path / "src", n=4)
    store = tmp_path / "ds.zarr"
    assert main(["ingest", str(source), str(store), "--json", "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 4 and summary["class_names"] == ["background", "foreground"]
    assert open_dataset(store).meta["split_seed"] == 3
    assert np.isclose(sum(summary["class_fractions"]), 1.0)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    assert main(["ingest", str(empty), str(tmp_path / "e.zarr")]) == 1
    assert (
        main(["ingest", str(source), str(store), "--val-fraction", "0.9", "--test-fraction", "0.2"])
        == 2
    )


def test_config_builds_the_stage_settings():
    config = IngestConfig(
        source="src",
        store="ds.zarr",
        masks_dir="gt",
        mask_suffix="_m",
        foreground_value=0,
        invert=True,
        val_fraction=0.1,
        test_fraction=0.25,
    )
    assert config.pair_layout() == PairLayout(images_dir="images", masks_dir="gt", mask_suffix="_m")
    assert config.mask_rules() == MaskRules(num_classes=2, foreground_value=0, invert=True)
    assert config.split_fractions() == pytest.approx({"train": 0.65, "val": 0.1, "test": 0.25})


def test_flow_keeps_one_format_per_store_and_lists_hidden_images(tmp_path):
    """An RGBA PNG and a 16-bit TIFF among grey PNGs, and a hidden `..png`: the grey pairs are
    stored, the others rejected with the reason, and the store records its format."""
    from tests.images import random_image, save

    source = make_source(tmp_path / "src", n=4)
    rng = np.random.default_rng(0)
    for name, image in (
        ("rgba.png", random_image(rng, (40, 56, 4))),
        ("deep.tif", random_image(rng, (40, 56), "uint16")),
    ):
        save(source / "images" / name, image)
        save(source / "masks" / f"{name.split('.')[0]}.png", np.zeros((40, 56), np.uint8))
    (source / "images" / "..png").write_bytes((source / "images" / "s00.png").read_bytes())
    summary = ingest_dataset(IngestConfig(source=str(source), store=str(tmp_path / "ds.zarr")))
    assert summary.samples == 4
    why = {r["path"].split("/")[-1]: r["reason"] for r in summary.rejected}
    assert sorted(why) == ["..png", "deep.tif", "rgba.png"]
    assert why["rgba.png"].startswith("4 channels uint8, but the store")
    assert why["deep.tif"].startswith("1 channel uint16, but the store")
    assert why["..png"].startswith("hidden file")
    meta = open_dataset(tmp_path / "ds.zarr").meta
    assert meta["image_format"] == {"channels": 1, "dtype": "uint8"}


def test_flow_takes_the_split_of_the_source_folders(tmp_path):
    """train/ and test/ folders (no val/): their split kept, val drawn from train (issue 15)."""
    from tests.images import random_image, random_mask, save

    source = tmp_path / "src"
    make_source(source / "train", n=6)
    rng = np.random.default_rng(1)
    for stem in ("t0", "t1"):
        save(source / "test" / "images" / f"{stem}.png", random_image(rng, (40, 56)))
        save(source / "test" / "masks" / f"{stem}.png", random_mask(rng, (40, 56)))
    config = IngestConfig(source=str(source), store=str(tmp_path / "ds.zarr"), workers=1)
    summary = ingest_dataset(config)
    assert (summary.samples, summary.split_source) == (8, "folders")
    assert summary.split == {"train": 5, "val": 1, "test": 2}
    dataset = open_dataset(config.store)
    assert dataset.samples("test") == ["t0", "t1"]
    assert dataset.meta["split_source"] == "folders"


def test_cli_split_file_is_kept_across_reingests_and_a_bad_one_creates_nothing(tmp_path, capsys):
    source = make_source(tmp_path / "src", n=6)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"s00": "test", "s01": "val", "s02": "train"}))
    store = tmp_path / "ds.zarr"
    args = ["ingest", str(source), str(store), "--workers", "1", "--split-file", str(split_file)]
    assert main(args) == 0
    assert f"(from file:{split_file.resolve()})" in capsys.readouterr().out
    first = open_dataset(store).meta
    assert first["split_source"] == f"file:{split_file.resolve()}"
    assert "s00" in first["split"]["test"] and "s01" in first["split"]["val"]
    assert main(args) == 0
    assert open_dataset(store).meta["split"] == first["split"]
    split_file.write_text(json.dumps({"test": ["s00", "nope"]}))
    bad = IngestConfig(source=str(source), store=str(tmp_path / "new.zarr"), split_file=args[-1])
    with pytest.raises(ValueError, match="unknown sample ids nope"):
        ingest_dataset(bad)
    assert not (tmp_path / "new.zarr").exists()
