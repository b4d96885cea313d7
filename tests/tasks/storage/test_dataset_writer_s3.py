"""The dataset store on object storage (moto's S3 server): written in place, committed last."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from segflow.tasks.runtime.locks import holds
from segflow.tasks.storage import dataset_writer
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import (
    committed_samples,
    init_store,
    lock_store,
    write_index,
    write_sample,
)
from tests.servers import Bucket
from tests.tasks.storage.test_dataset_writer import CLASSES, put, version
from tests.tasks.storage.test_staging import objects, operations, record_requests


@pytest.fixture
def store(s3: Bucket) -> str:
    url = s3.url("store.zarr")
    init_store(url, class_names=CLASSES)
    return url


def test_a_sample_written_to_s3_reads_back(store):
    put(store, 1)
    assert list(committed_samples(store)) == ["s"]
    dataset = open_dataset(store)
    image, mask, _, _ = version(1)
    np.testing.assert_array_equal(dataset.image("s")[...], image)
    np.testing.assert_array_equal(dataset.mask("s")[...], mask)
    put(store, 2)  # replaced in place
    np.testing.assert_array_equal(open_dataset(store).image("s")[...], version(2)[0])


def test_a_write_failing_before_any_upload_leaves_the_old_version_committed(store, monkeypatch):
    put(store, 1)
    real = dataset_writer._write

    def dies(target, data, workers):
        if target.ndim == 2:  # the mask, half encoded after the whole new image
            target[:32] = data[:32]
            raise OSError(errno.ENOSPC, "No space left on device")
        real(target, data, workers)

    monkeypatch.setattr(dataset_writer, "_write", dies)
    with pytest.raises(OSError, match="No space left"):
        put(store, 2)
    # encoding is local: nothing was sent, the old version stays whole and committed
    assert committed_samples(store)["s"].image_sha256 == version(1)[2]["sha256"]
    np.testing.assert_array_equal(open_dataset(store).image("s")[...], version(1)[0])
    np.testing.assert_array_equal(open_dataset(store).mask("s")[...], version(1)[1])


def test_an_upload_killed_midway_leaves_the_sample_uncommitted_until_written_again(
    store, monkeypatch
):
    import s3fs

    put(store, 1)
    real = s3fs.S3FileSystem._put_file

    async def dies(self, lpath, rpath, *args, **kwargs):
        if "/masks/s/c/" in rpath:  # after the old commit is withdrawn, amid the new objects
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset")
        return await real(self, lpath, rpath, *args, **kwargs)

    with monkeypatch.context() as broken:
        broken.setattr(s3fs.S3FileSystem, "_put_file", dies)
        with pytest.raises(OSError, match="Connection reset"):
            put(store, 2)
    assert committed_samples(store) == {}  # no half-new sample shown as stored
    put(store, 2)  # the resume
    assert list(committed_samples(store)) == ["s"]
    np.testing.assert_array_equal(open_dataset(store).mask("s")[...], version(2)[1])


def tall(seed: int, *, rows: int = 2100, zero_below: int | None = None):
    """A sample of two shards per array on S3 (2100 rows; shards of 2048): image, mask, attributes.
    Rows from `zero_below` on are the fill value (0): zarr stores no shard that holds only it."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 255, size=(3, rows, 40), dtype=np.uint8)
    mask = (rng.random((rows, 40)) < 0.3).astype(np.uint8)
    if zero_below is not None:
        image[:, zero_below:], mask[zero_below:] = 0, 0
    sha = f"{seed:064d}"
    counts = [int((mask == 0).sum()), int(mask.sum())]
    image_attrs = {"sha256": sha}
    mask_attrs = {"sha256": sha, "image_sha256": sha, "class_counts": counts}
    return image, mask, image_attrs, mask_attrs


def same_samples(remote: str, local) -> bool:
    """Whether the two stores hold the same committed samples: attributes and pixels."""
    ids = list(committed_samples(local))
    there, here = open_dataset(remote), open_dataset(local)
    pairs = [
        (a(i), b(i)) for i in ids for a, b in ((there.image, here.image), (there.mask, here.mask))
    ]
    return (
        bool(ids)
        and list(committed_samples(remote)) == ids
        and all(
            x.attrs.asdict() == y.attrs.asdict() and np.array_equal(x[...], y[...])
            for x, y in pairs
        )
    )


def put_tall(location, seed: int, **kwargs) -> None:
    image, mask, image_attrs, mask_attrs = tall(seed, **kwargs)
    write_sample(location, "t", image, mask, image_attrs=image_attrs, mask_attrs=mask_attrs)


def test_a_new_sample_is_two_listings_and_one_put_per_object_its_commit_last(
    tmp_path, s3: Bucket, monkeypatch
):
    remote, local = s3.url("new.zarr"), tmp_path / "new.zarr"
    for location in (remote, local):
        init_store(location, class_names=CLASSES)
    sent = record_requests(monkeypatch)
    put_tall(remote, 1)
    # 2 + 2 shards and 2 zarr.json; nothing read, no existence probe, no delete
    assert operations(sent) == {"LIST": 2, "PUT": 6}, sent
    assert sent[-1][:2] == ("PUT", "new.zarr/masks/t/zarr.json")  # the commit
    put_tall(local, 1)  # the local path (staged folder swapped in): 1024² shards, same pixels
    assert same_samples(remote, local)


def test_replacing_a_sample_withdraws_its_commit_before_anything_else_changes(
    tmp_path, s3: Bucket, monkeypatch
):
    remote, local = s3.url("re.zarr"), tmp_path / "re.zarr"
    for location in (remote, local):
        init_store(location, class_names=CLASSES)
        put_tall(location, 1)
    sent = record_requests(monkeypatch)
    put_tall(remote, 2, zero_below=2048)  # its second shards hold only the fill value
    written = list(sent)
    put_tall(local, 2, zero_below=2048)
    # the old second shards are gone (else they would read in place of the fill value)
    np.testing.assert_array_equal(open_dataset(remote).image("t")[...], tall(2, zero_below=2048)[0])
    assert same_samples(remote, local)
    assert sorted(key for key in objects(remote) if "/c/" in key) == [
        "images/t/c/0/0/0",
        "masks/t/c/0/0",
    ]
    assert list(committed_samples(remote)) == ["t"]
    changes = [(op, key) for op, key, _ in written if op != "LIST"]
    assert changes[0] == ("DELETE", "re.zarr/masks/t/zarr.json")  # the withdrawal, first
    assert changes[1][0] == "POST"  # one batch delete: the old second shards, not rewritten
    assert changes[-1] == ("PUT", "re.zarr/masks/t/zarr.json")  # the commit, last
    assert operations(written) == {"LIST": 2, "DELETE": 1, "POST": 1, "PUT": 4}, written


def test_index_and_lock_of_a_store_on_s3(store):
    with lock_store(store):
        assert holds(store)
        write_index(store, {"split": {"s": "train"}})
    assert open_dataset(store).meta["split"] == {"s": "train"}
    assert not holds(store)


def test_a_prefix_holding_other_objects_is_refused(s3: Bucket):
    import s3fs

    s3fs.S3FileSystem().pipe(f"{s3.name}/other/readme.txt", b"not zarr")
    with pytest.raises(ValueError, match="other: exists and is not a Zarr store"):
        init_store(s3.url("other"), class_names=CLASSES)
