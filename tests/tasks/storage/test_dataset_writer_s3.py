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
)
from tests.servers import Bucket
from tests.tasks.storage.test_dataset_writer import CLASSES, put, version


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


def test_a_write_killed_midway_leaves_the_sample_uncommitted_until_written_again(
    store, monkeypatch
):
    put(store, 1)
    real = dataset_writer._write

    def dies(target, data, workers):
        if target.ndim == 2:  # the mask, half written after the whole new image
            target[:32] = data[:32]
            raise OSError(errno.ECONNRESET, "Connection reset")
        real(target, data, workers)

    monkeypatch.setattr(dataset_writer, "_write", dies)
    with pytest.raises(OSError, match="Connection reset"):
        put(store, 2)
    assert committed_samples(store) == {}  # no half-new sample shown as stored
    monkeypatch.setattr(dataset_writer, "_write", real)
    put(store, 2)  # the resume
    assert list(committed_samples(store)) == ["s"]
    np.testing.assert_array_equal(open_dataset(store).mask("s")[...], version(2)[1])


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
