"""An ingest source on s3://: the same pairs, splits, rejections and stored samples as the same
files on disk (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segflow.tasks.ingest import samples
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import PairLayout, find_pairs, split_folders
from segflow.tasks.ingest.samples import SampleChecks, ingest_pair
from segflow.tasks.ingest.source_split import read_split_file, source_split
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import init_store
from segflow.tasks.storage.files import StorageError
from segflow.tasks.storage.image_io import SizeLimits
from tests.images import random_image, random_mask, save
from tests.remote import upload
from tests.servers import Bucket

LAYOUT = PairLayout(images_dir="images", masks_dir="masks", mask_suffix="")
RULES = MaskRules(num_classes=2, foreground_value=None, invert=False)
UNLIMITED = SampleChecks(SizeLimits(10**9, 10**9), image_format=None)


def split_source(root, rng):
    """train/, val/, test/ with PNG and tiled-TIFF pairs, plus files that are rejected."""
    for split, stem, suffix in (
        ("train", "a", ".png"),
        ("train", "b", ".tif"),
        ("val", "c", ".png"),
        ("test", "d", ".tiff"),
    ):
        tiff = {"tile": (32, 32)} if suffix != ".png" else {}
        save(root / split / "images" / f"{stem}{suffix}", random_image(rng, (40, 64)), **tiff)
        save(root / split / "masks" / f"{stem}{suffix}", random_mask(rng, (40, 64)), **tiff)
    save(root / "train" / "images" / "lonely.png", random_image(rng, (8, 8)))
    save(root / "train" / "images" / ".hidden.png", random_image(rng, (8, 8)))
    save(root / "val" / "masks" / "model.png", random_mask(rng, (8, 8)))
    save(root / "val" / "images" / "model.png", random_image(rng, (8, 8)))
    (root / "train" / "images" / "notes.txt").write_text("not an image")
    (root / "train" / "images" / ".DS_Store").write_bytes(b"junk")
    save(root / "test" / "images" / "nested" / "e.png", random_image(rng, (8, 8)))
    return root


@pytest.fixture
def sources(tmp_path, s3: Bucket):
    """The same split source on disk and on s3: (local folder, URL)."""
    local = split_source(tmp_path / "src", np.random.default_rng(0))
    return local, upload(local, s3.url("raw", "src"))


def relative(rejected, root):
    return sorted((r.path.removeprefix(str(root)), r.reason) for r in rejected)


def test_pairs_splits_and_rejections_equal_the_local_ones(sources):
    local, url = sources
    local_pairs, local_rejected = find_pairs(local, LAYOUT)
    pairs, rejected = find_pairs(url, LAYOUT)
    assert [(p.sample_id, p.split) for p in pairs] == [
        ("a", "train"),
        ("b", "train"),
        ("c", "val"),
        ("d", "test"),
    ]
    assert [(p.sample_id, p.split) for p in pairs] == [(p.sample_id, p.split) for p in local_pairs]
    assert pairs[1].image == f"{url}/train/images/b.tif"
    assert pairs[1].mask == f"{url}/train/masks/b.tif"
    assert relative(rejected, url) == relative(local_rejected, local.resolve())
    why = dict(relative(rejected, url))
    assert why["/train/images/lonely.png"] == "image without mask"
    assert why["/train/images/.hidden.png"].startswith("hidden file")
    assert why["/train/images/notes.txt"].startswith("not an image file")
    assert "'model' is reserved" in why["/val/images/model.png"]
    assert split_folders(url + "/", LAYOUT) == {
        split: f"{url}/{split}" for split in ("train", "val", "test")
    }


def test_a_split_file_on_s3_overrides_the_folders(sources, s3: Bucket):
    import s3fs

    _, url = sources
    pairs, _ = find_pairs(url, LAYOUT)
    json_url, csv_url = s3.url("splits", "s.json"), s3.url("splits", "s.csv")
    s3fs.S3FileSystem().pipe(
        {
            json_url: json.dumps({"test": ["a"], "val": ["b"]}).encode(),
            csv_url: b"\xef\xbb\xbfid,split\r\na,test\r\nb,val\r\n",
        }
    )
    assert read_split_file(json_url) == read_split_file(csv_url) == {"a": "test", "b": "val"}
    given = source_split(url, pairs, csv_url)
    assert given.assigned == {"a": "test", "b": "val", "c": "val", "d": "test"}
    assert given.origin == f"folders+file:{csv_url}"


def test_missing_sources_and_split_files_are_one_line_naming_the_url(sources, s3: Bucket):
    _, url = sources
    missing = s3.url("raw", "nothing")
    with pytest.raises(FileNotFoundError) as caught:
        find_pairs(missing, LAYOUT)
    assert str(caught.value) == f"source {missing} does not exist (give the folder holding images/)"
    no_bucket = "s3://segflow-no-such-bucket/raw"
    with pytest.raises(FileNotFoundError, match=f"^source {no_bucket} does not exist"):
        find_pairs(no_bucket, LAYOUT)
    with pytest.raises(ValueError, match=f"^source {url}/train/images/a.png is a file"):
        find_pairs(f"{url}/train/images/a.png", LAYOUT)
    with pytest.raises(FileNotFoundError, match=f"^source {url}/val has no pictures/ folder"):
        find_pairs(f"{url}/val", PairLayout("pictures", "masks", ""))
    absent = s3.url("splits", "absent.csv")
    with pytest.raises(ValueError) as caught:
        read_split_file(absent)
    assert str(caught.value) == f"{absent}: cannot read the split file (No such file)"


def test_an_unreachable_endpoint_is_one_line_naming_the_source(monkeypatch, s3: Bucket):
    """A wrong AWS_ENDPOINT_URL: a StorageError (an OSError, which the CLI's preflight
    turns into its one-line usage error) naming the source, not botocore's traceback."""
    import s3fs

    from segflow.tasks.storage import urls
    from tests.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    # One attempt: what is tested is the message, not botocore's retries (seconds each).
    monkeypatch.setattr(urls, "S3_DEFAULTS", {"config_kwargs": {"retries": {"max_attempts": 1}}})
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(StorageError) as caught:
        find_pairs(s3.url("raw"), LAYOUT)
    assert str(caught.value).startswith(f"{s3.url('raw')}: cannot reach it (")
    assert isinstance(caught.value, OSError) and "\n" not in str(caught.value)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def streamed(monkeypatch) -> list[str]:
    """The images that ingest_pair streams tile by tile (its lazy path), as it streams them."""
    found = []
    lazy_pair = samples._lazy_pair

    def recording(image, mask, rules, workers):
        found.append(str(image.path))
        return lazy_pair(image, mask, rules, workers)

    monkeypatch.setattr(samples, "_lazy_pair", recording)
    return found


def ingested(pairs, store):
    """Outcomes of ingesting `pairs` into a new `store`, and the store; `stream_pixels` below
    their size sends the tiled TIFF pairs down the lazy path."""
    init_store(store, class_names=("background", "foreground"))
    outcomes = [
        ingest_pair(pair, store, rules=RULES, checks=UNLIMITED, stream_pixels=1000)
        for pair in pairs
    ]
    return outcomes, open_dataset(store)


def test_a_source_on_s3_ingests_into_the_same_samples(sources, tmp_path, streamed):
    """Pixels, class ids, counts and checksums of every sample equal those ingested from disk,
    PNG pairs decoded whole and tiled TIFF pairs streamed tile by tile."""
    local, url = sources
    local_outcomes, local_store = ingested(find_pairs(local, LAYOUT)[0], tmp_path / "local.zarr")
    outcomes, store = ingested(find_pairs(url, LAYOUT)[0], tmp_path / "s3.zarr")
    assert streamed[2:] == [f"{url}/train/images/b.tif", f"{url}/test/images/d.tiff"]
    assert [(o.sample_id, o.status) for o in outcomes] == [
        (o.sample_id, o.status) for o in local_outcomes
    ]
    assert {o.status for o in outcomes} == {"written"}
    for sample in "abcd":
        image, mask = store.image(sample), store.mask(sample)
        np.testing.assert_array_equal(image[...], local_store.image(sample)[...])
        np.testing.assert_array_equal(mask[...], local_store.mask(sample)[...])
        assert image.attrs["source"].startswith(f"{url}/")
        for attrs, expected in (
            (image.attrs, local_store.image(sample).attrs),
            (mask.attrs, local_store.mask(sample).attrs),
        ):
            assert {k: v for k, v in attrs.items() if k != "source"} == {
                k: v for k, v in expected.items() if k != "source"
            }


def test_a_corrupt_object_is_rejected_naming_its_url(sources, s3: Bucket, tmp_path):
    import s3fs

    _, url = sources
    pairs, _ = find_pairs(url, LAYOUT)
    s3fs.S3FileSystem().pipe_file(pairs[0].image, b"\x89PNG truncated")
    outcomes, _ = ingested(pairs[:1], tmp_path / "store.zarr")
    ((outcome),) = outcomes
    assert (outcome.status, outcome.path) == ("rejected", f"{url}/train/images/a.png")
    assert outcome.reason.startswith("unreadable image")
