"""Inference inputs on s3://: folders, globs, TIFFs, Zarr arrays and dataset stores give the
sources and pixels the same inputs give on disk (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from segflow.tasks.infer.sources import find_sources, forget_opened
from segflow.tasks.storage.image_io import sha256_file
from tests.images import make_store, random_image, save
from tests.remote import fetched_bytes, record_fetches, upload
from tests.servers import Bucket
from tests.tasks.storage.test_staging import operations, record_requests

FIELDS = ("name", "kind", "key", "shape", "dtype")


def described(sources):
    return [tuple(getattr(s, f) for f in FIELDS) for s in sources]


@pytest.fixture
def inputs(tmp_path, s3: Bucket):
    """A folder of PNG, JPEG and tiled TIFF images (plus a corrupt one, a hidden one, a text
    file and a sub-folder) on disk and on s3: (local folder, URL)."""
    rng = np.random.default_rng(0)
    local = tmp_path / "in"
    save(local / "a.png", random_image(rng, (30, 50, 3)))
    save(local / "b.tif", random_image(rng, (70, 90), "uint16"), tile=(32, 32))
    save(local / "c.jpg", random_image(rng, (20, 24)))
    save(local / ".hidden.png", random_image(rng, (8, 8)))
    save(local / "sub" / "d.png", random_image(rng, (8, 8)))
    (local / "broken.png").write_bytes(b"\x89PNG truncated")
    (local / "notes.txt").write_text("not an image")
    forget_opened()
    yield local, upload(local, s3.url("in"))
    forget_opened()


def test_a_folder_and_a_glob_give_the_local_sources(inputs):
    local, url = inputs
    for local_spec, spec in ((str(local), url + "/"), (f"{local}/*.tif", f"{url}/*.tif")):
        local_found, local_rejected = find_sources(local_spec)
        found, rejected = find_sources(spec)
        assert described(found) == described(local_found)
        assert [s.path for s in found] == [f"{url}/{s.path.split('/')[-1]}" for s in local_found]
        assert [(p.removeprefix(url), r.split(" (")[0]) for p, r in rejected] == [
            (p.removeprefix(str(local)), r.split(" (")[0]) for p, r in local_rejected
        ]
    assert [s.name for s in found] == ["b"]
    (local_sources, _), (sources, rejected) = find_sources(str(local)), find_sources(url)
    assert [s.name for s in sources] == ["a", "b", "c"]
    assert {p.split("/")[-1] for p, _ in rejected} == {"broken.png", ".hidden.png"}
    for source, local_source in zip(sources, local_sources, strict=True):
        _, height, width = source.shape
        window = (3, height - 2, 5, width - 1)
        np.testing.assert_array_equal(source.region(*window), local_source.region(*window))
        assert sha256_file(source.path) == sha256_file(local_source.path)


def test_a_remote_tiff_is_read_by_tile(tmp_path, s3: Bucket, monkeypatch):
    """A region of a 4 MiB tiled TIFF fetches its tiles, not the object."""
    pixels = random_image(np.random.default_rng(1), (2048, 2048), "uint8")
    path = save(tmp_path / "big.tif", pixels, tile=(256, 256))
    url = upload(path, s3.url("big.tif"))
    forget_opened()
    ((source,), _) = find_sources(url)
    assert (source.name, source.kind, source.shape) == ("big", "tiff", (1, 2048, 2048))
    fetched = record_fetches(monkeypatch)
    np.testing.assert_array_equal(source.region(300, 700, 10, 500), pixels[None, 300:700, 10:500])
    assert fetched_bytes(fetched, "big.tif") < path.stat().st_size / 4
    forget_opened()


def test_a_rewritten_object_is_read_afresh(tmp_path, s3: Bucket):
    """The per-process cache of openers keys remote files by ETag, as local ones by mtime."""
    path = save(tmp_path / "img.tif", np.full((64, 64), 10, np.uint8), tile=(32, 32))
    url = upload(path, s3.url("img.tif"))
    forget_opened()
    ((source,), _) = find_sources(url)
    assert (source.region(0, 64, 0, 64) == 10).all()
    upload(save(path, np.full((64, 64), 200, np.uint8), tile=(32, 32)), url)
    assert (source.region(0, 64, 0, 64) == 200).all()
    forget_opened()


def test_zarr_arrays_and_dataset_stores_on_s3(tmp_path, s3: Bucket):
    array = zarr.create_array(tmp_path / "img.zarr", shape=(12, 14), dtype="uint8")
    array[...] = 7
    ((zsrc,), _) = find_sources(upload(tmp_path / "img.zarr", s3.url("img.zarr")))
    assert (zsrc.name, zsrc.kind, zsrc.shape) == ("img", "zarr", (1, 12, 14))
    assert (zsrc.region(0, 2, 0, 2) == 7).all()

    store = make_store(tmp_path, count=4, size=40)
    url = upload(store, s3.url("ds.zarr"))
    local_sources, _ = find_sources(str(store), split="train")
    sources, rejected = find_sources(url, split="train")
    assert rejected == [] and described(sources) == described(local_sources)
    assert {s.path for s in sources} == {url}
    for source, local_source in zip(sources, local_sources, strict=True):
        np.testing.assert_array_equal(source.region(3, 9, 5, 30), local_source.region(3, 9, 5, 30))


def test_nothing_at_a_url_is_one_line_naming_it(s3: Bucket):
    for spec in (s3.url("nothing"), s3.url("in", "*.png"), "s3://segflow-no-such-bucket/in"):
        with pytest.raises(FileNotFoundError) as caught:
            find_sources(spec)
        assert str(caught.value) == (
            f"{spec}: no images found (store, Zarr array, TIFF, PNG/JPEG, folder or glob)"
        )


def test_a_dataset_store_on_s3_is_read_by_whole_shards_fetched_once(
    tmp_path, s3: Bucket, monkeypatch
):
    """Blocks with a halo read every shard they touch in full, or nearly: one GET per shard,
    kept for the next block, not a GET per inner chunk (benchmarks/README.md)."""
    store = make_store(tmp_path, count=1, size=1100)  # 2 x 2 shards of 1024², 256² chunks
    url = upload(store, s3.url("ds.zarr"))
    forget_opened()
    ((source,), _), ((local,), _) = find_sources(url), find_sources(str(store))
    sent = record_requests(monkeypatch)
    for window in ((0, 600, 0, 1100), (500, 1100, 0, 1100)):  # the second reaches row 1 too
        np.testing.assert_array_equal(source.region(*window), local.region(*window))
    shards = [key for op, key, ranged in sent if "/c/" in key]
    assert len(shards) == len(set(shards)) == 4
    assert operations(sent)["GET range"] == 0
    forget_opened()
