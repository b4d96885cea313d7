import os

import numpy as np
import pytest
import zarr

from segflow.flows.config import InferConfig
from segflow.tasks.infer.sources import find_sources, forget_opened
from tests.images import crafted_jpeg, crafted_png, crafted_tiff, make_store, save

LIMITS = InferConfig(input="in", output="out.zarr").size_limits()  # the defaults


def test_store_split_sources_read_regions(tmp_path):
    store = make_store(tmp_path, count=4, size=40)
    sources, rejected = find_sources(str(store), split="train")
    assert rejected == [] and len(sources) == 2
    source = sources[0]
    assert source.kind == "store" and source.shape == (1, 40, 40)
    from segflow.tasks.storage.dataset import open_dataset

    expected = open_dataset(store).image(source.key)[:, 3:9, 5:30]
    np.testing.assert_array_equal(source.region(3, 9, 5, 30), expected)


def test_files_folder_glob_and_zarr_array(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 60000, (21, 17), dtype=np.uint16)
    save(tmp_path / "in" / "a.png", rgb)
    save(tmp_path / "in" / "b.tif", grey16, tile=(16, 16))
    (tmp_path / "in" / "c.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    sources, rejected = find_sources(str(tmp_path / "in"))
    assert [s.name for s in sources] == ["a", "b"]
    assert [p.split("/")[-1] for p, _ in rejected] == ["c.png"]
    a, b = sources
    assert a.shape == (3, 30, 50) and b.shape == (1, 21, 17) and b.dtype == "uint16"
    np.testing.assert_array_equal(a.region(2, 7, 40, 50), np.moveaxis(rgb, -1, 0)[:, 2:7, 40:])
    np.testing.assert_array_equal(b.region(0, 21, 3, 4), grey16[None, :, 3:4])
    assert [s.name for s in find_sources(str(tmp_path / "in" / "*.tif"))[0]] == ["b"]

    array = zarr.create_array(tmp_path / "img.zarr", shape=(12, 14), dtype="uint8")
    array[...] = 7
    (zsrc,), _ = find_sources(str(tmp_path / "img.zarr"))
    assert zsrc.shape == (1, 12, 14) and (zsrc.region(0, 2, 0, 2) == 7).all()


def test_nothing_found_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images found"):
        find_sources(str(tmp_path / "missing*.png"))


def test_tiff_regions_stay_exact_when_the_tile_cache_evicts(tmp_path, monkeypatch):
    """Overlapping regions of a tiled TIFF, read through a tile cache smaller than the image
    (so tiles are evicted and decoded again), equal the pixels tifffile reads whole."""
    import segflow.tasks.infer.sources as sources_module

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    save(tmp_path / "big.tif", rgb, tile=(32, 32))
    monkeypatch.setattr(sources_module, "TIFF_CACHE_BYTES", 4 * 32 * 32 * 3)  # four tiles
    forget_opened()
    (source,), _ = find_sources(str(tmp_path / "big.tif"))
    expected = np.moveaxis(rgb, -1, 0)
    for y0, y1, x0, x1 in [(0, 80, 0, 120), (40, 200, 100, 300), (0, 80, 0, 120), (5, 6, 7, 8)]:
        np.testing.assert_array_equal(source.region(y0, y1, x0, x1), expected[:, y0:y1, x0:x1])
    forget_opened()


def test_a_rewritten_tiff_is_read_afresh(tmp_path):
    """The per-process cache of openers and decoded tiles must not serve a replaced file."""
    path = tmp_path / "img.tif"
    save(path, np.full((64, 64), 10, dtype=np.uint8), tile=(32, 32))
    (source,), _ = find_sources(str(path))
    assert (source.region(0, 64, 0, 64) == 10).all()
    save(path, np.full((64, 64), 200, dtype=np.uint8), tile=(32, 32))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse clocks
    assert (source.region(0, 64, 0, 64) == 200).all()


def test_names_that_would_clash_in_the_prediction_store_are_rejected(tmp_path):
    """`model.png` would land on the store's model bundle, a.png and a.tif on one prediction,
    a hidden image on a hidden member: each is refused, duplicates naming both files."""
    grey = np.zeros((8, 8), np.uint8)
    for name in ("model.png", "a.png", "a.tif", "b.png"):
        save(tmp_path / "in" / name, grey)
    for name in (".x.png", "..png"):
        (tmp_path / "in" / name).write_bytes((tmp_path / "in" / "b.png").read_bytes())
    (tmp_path / "in" / ".DS_Store").write_bytes(b"junk")
    sources, rejected = find_sources(str(tmp_path / "in"), limits=LIMITS)
    assert [s.name for s in sources] == ["b"]
    why = {path.split("/")[-1]: reason for path, reason in rejected}
    assert sorted(why) == ["..png", ".x.png", "a.png", "a.tif", "model.png"]
    assert "'model' is reserved" in why["model.png"]
    assert why["a.png"].startswith("duplicate name 'a'") and why["a.png"].endswith(
        f"{tmp_path / 'in' / 'a.tif'}; rename one"
    )
    assert str(tmp_path / "in" / "a.png") in why["a.tif"]
    assert "hidden name" in why[".x.png"] and "hidden name" in why["..png"]
    _, (only,) = find_sources(str(tmp_path / "in" / "model.png"), limits=LIMITS)
    assert "'model' is reserved" in only[1]


def test_store_samples_with_reserved_names_are_rejected(tmp_path):
    store = make_store(tmp_path, count=4, size=32)
    root = zarr.open_group(store, mode="r+")
    meta = dict(root.attrs["segflow"])
    (first, *_) = meta["split"]["train"]
    # A sample named `model`, as a store written before names were checked could hold.
    for group in ("images", "masks"):
        os.rename(store / group / first, store / group / "model")
    meta["split"]["train"] = ["model" if s == first else s for s in meta["split"]["train"]]
    root.attrs["segflow"] = meta
    sources, rejected = find_sources(str(store), split="train", limits=LIMITS)
    assert "model" not in [s.name for s in sources] and len(sources) == 1
    assert rejected == [(f"{store}/images/model", rejected[0][1])]
    assert "'model' is reserved" in rejected[0][1]


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda d: crafted_png(d / "bomb.png", 13000, 13000, channels=3), "--max-pixels"),
        (lambda d: crafted_jpeg(d / "bomb.jpg", 65000, 65000), "--max-pixels"),
        (lambda d: crafted_tiff(d / "bomb.tif", 20000, 20000, tiled=False), "--max-pixels"),
        (lambda d: crafted_tiff(d / "bomb.tif", 60000, 60000, tiled=True), "--max-tiled-pixels"),
    ],
    ids=["png", "jpeg", "strip-tiff", "tiled-tiff"],
)
def test_input_discovery_refuses_huge_headers(tmp_path, make, option):
    path = make(tmp_path / "in")
    save(tmp_path / "in" / "ok.png", np.zeros((8, 8), np.uint8))
    sources, rejected = find_sources(str(tmp_path / "in"), limits=LIMITS)
    assert [s.name for s in sources] == ["ok"]
    ((where, reason),) = rejected
    assert where == str(path) and reason.startswith("declares") and f"raise {option}" in reason
