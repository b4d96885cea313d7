"""A dataset store on S3 read through the bounded cache: a patch read twice is fetched once."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.tasks.storage import dataset as dataset_module
from segflow.tasks.storage.dataset import open_dataset
from tests.remote import upload
from tests.servers import Bucket
from tests.tasks.storage.test_dataset_writer import CLASSES, put


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every object (or byte range of one) zarr fetches from S3 from now on, by key."""
    from s3fs import S3FileSystem

    fetched: list[str] = []
    original = S3FileSystem._cat_file

    async def counting(self, path, *args, **kwargs):
        fetched.append(path)
        return await original(self, path, *args, **kwargs)

    monkeypatch.setattr(S3FileSystem, "_cat_file", counting)
    return fetched


@pytest.fixture
def store(s3: Bucket, tmp_path) -> str:
    from segflow.tasks.storage.dataset_writer import init_store

    local = tmp_path / "store.zarr"
    init_store(local, class_names=CLASSES)
    put(local, 1)
    return upload(local, s3.url("store.zarr"))


def test_a_patch_read_again_is_not_fetched_again(store, fetches):
    dataset = open_dataset(store)
    first = np.asarray(dataset.image("s")[:, 8:40, 8:40])
    fetched = len(fetches)
    assert fetched > 0
    again = np.asarray(dataset.image("s")[:, 8:40, 8:40])
    np.testing.assert_array_equal(first, again)
    assert len(fetches) == fetched  # from the cache


def test_the_cache_is_bounded(store, fetches, monkeypatch):
    monkeypatch.setattr(dataset_module, "REMOTE_CACHE_BYTES", 1)  # nothing fits
    dataset = open_dataset(store)
    np.asarray(dataset.image("s")[:, 8:40, 8:40])
    fetched = len(fetches)
    np.asarray(dataset.image("s")[:, 8:40, 8:40])
    assert len(fetches) > fetched  # fetched again: nothing was kept
