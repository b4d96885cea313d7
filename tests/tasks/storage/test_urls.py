"""Stores by URL: local paths and s3:// through the same functions."""

import numpy as np
import pytest

from segflow.tasks.storage import urls
from tests.servers import Bucket


def test_local_and_remote_are_told_apart(tmp_path):
    assert not urls.is_remote(tmp_path)
    assert not urls.is_remote(f"file://{tmp_path}")
    assert urls.local_path(f"file://{tmp_path}") == tmp_path
    assert urls.is_remote("s3://bucket/x.zarr")
    with pytest.raises(ValueError, match="s3://bucket/x.zarr: a local path is needed"):
        urls.local_path("s3://bucket/x.zarr")


def test_join_and_name():
    assert urls.join("s3://b/x.zarr/", "img", "0") == "s3://b/x.zarr/img/0"
    assert urls.join("/data/x.zarr", "img") == "/data/x.zarr/img"
    assert urls.name_of("s3://b/raw/") == "raw"


def test_a_group_on_s3_reads_back(s3: Bucket):
    url = s3.url("x.zarr")
    root = urls.open_group(url, mode="a")
    root.create_group("images").create_array("a", shape=(4, 4), dtype="u1")[:] = 7
    assert urls.exists(url, "zarr.json")
    assert not urls.exists(url, "nothing/zarr.json")
    assert np.all(urls.open_group(url, "images")["a"][:] == 7)


def test_given_options_override_segflows_defaults(monkeypatch):
    import fsspec

    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.setattr(urls, "_GIVEN", {})  # nothing left for later tests
    urls.use_options({"s3": {"max_concurrency": 4}})
    assert urls.storage_options("s3://b/x")["max_concurrency"] == 4
    assert urls.storage_options("s3://b/x")["use_listings_cache"] is False  # defaults kept
