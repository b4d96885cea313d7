"""Remote arrays read and written by whole shard objects (moto's S3 server): the objects are those
zarr writes in place, byte for byte, and each costs one request."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import zarr

from segflow.tasks.storage import urls
from segflow.tasks.storage.staging import StagedArray, memory_group, send_documents, staged
from tests.servers import Bucket

SHAPE, CHUNKS, SHARDS = (1, 700, 500), (1, 128, 128), (1, 256, 256)


def record_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """From now on, every HTTP request this process sends to S3, as ``(operation, key,
    ranged)``: operation GET, PUT, HEAD, DELETE or LIST; key without the bucket."""
    from aiobotocore.endpoint import AioEndpoint

    sent: list[tuple[str, str, bool]] = []
    original = AioEndpoint._send

    async def counting(self, request):
        url = urlsplit(request.url)
        key = url.path.lstrip("/").partition("/")[2]
        operation = "LIST" if "list-type" in url.query else request.method
        sent.append((operation, key, "Range" in request.headers))
        return await original(self, request)

    monkeypatch.setattr(AioEndpoint, "_send", counting)
    return sent


def operations(sent: list[tuple[str, str, bool]]) -> Counter:
    """Requests by operation, ranged GETs apart."""
    return Counter("GET range" if ranged else operation for operation, _, ranged in sent)


def new_array(location: str | Path) -> zarr.Array:
    """A (1, 700, 500) uint8 array in 128² chunks and 256² shards, writing every chunk."""
    root = urls.open_group(location, mode="a")
    array = root.create_array(
        "a",
        shape=SHAPE,
        dtype="uint8",
        chunks=CHUNKS,
        shards=SHARDS,
        compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3),
        fill_value=0,
    )
    return array.with_config({"write_empty_chunks": True})


def objects(location: str | Path) -> dict[str, bytes]:
    """Every object (file) under `location`, by key relative to it."""
    fs, root = urls.filesystem(location)
    return {path[len(root.rstrip("/")) + 1 :]: fs.cat_file(path) for path in fs.find(root)}


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4, SHAPE, dtype=np.uint8)


def test_staged_writes_are_the_objects_zarr_writes_in_place(tmp_path, s3: Bucket, pixels):
    local, remote = tmp_path / "a.zarr", s3.url("a.zarr")
    writes = [
        (slice(None), slice(0, 256), slice(0, 256)),
        (0, slice(256, 700), slice(256, 500)),  # edge shards: the array ends there
        (slice(None), slice(512, 700), slice(0, 256)),
    ]
    in_place, remote_array = new_array(local), staged(new_array(remote), remote)
    assert isinstance(remote_array, StagedArray)
    assert staged(in_place, local) is in_place  # a local array is written as it always was
    for window in writes:
        in_place[window] = pixels[window]
        remote_array[window] = pixels[window]
    assert objects(remote) == objects(local)
    got = zarr.open_group(remote, mode="r")["a"][...]  # plain zarr reads it back
    np.testing.assert_array_equal(got, zarr.open_group(local, mode="r")["a"][...])


def test_a_staged_write_is_one_put_per_shard(s3: Bucket, pixels, monkeypatch):
    remote = s3.url("a.zarr")
    array = staged(new_array(remote), remote)
    sent = record_requests(monkeypatch)
    array[:, 256:700, 0:500] = pixels[:, 256:700]  # 2 x 2 shards
    assert operations(sent) == {"PUT": 4}
    assert sorted(key.rsplit("/c/", 1)[1] for _, key, _ in sent) == [
        "0/1/0",
        "0/1/1",
        "0/2/0",
        "0/2/1",
    ]


def test_a_staged_read_is_one_whole_get_per_shard(s3: Bucket, pixels, monkeypatch):
    remote = s3.url("a.zarr")
    new_array(remote)[...] = pixels
    array = staged(zarr.open_group(remote, mode="r")["a"], remote)
    sent = record_requests(monkeypatch)
    window = (0, slice(100, 600, 2), slice(300, 500))  # parts of 3 x 1 shards, strided
    np.testing.assert_array_equal(array[window], pixels[window])
    assert operations(sent) == {"GET": 3}
    missing = staged(new_array(s3.url("b.zarr")), s3.url("b.zarr"))
    assert not missing[:, :10, :10].any()  # shards never written read as the fill value


def test_a_write_of_part_of_a_shard_is_refused_before_anything_is_sent(
    s3: Bucket, pixels, monkeypatch
):
    remote = s3.url("a.zarr")
    array = staged(new_array(remote), remote)
    sent = record_requests(monkeypatch)
    for window in (
        (slice(None), slice(0, 100), slice(0, 256)),  # stops inside a shard
        (slice(None), slice(128, 256), slice(0, 256)),  # starts inside one
        (slice(None), slice(0, 512, 2), slice(0, 256)),  # steps
    ):
        with pytest.raises(ValueError, match="covers part of a shard of 256"):
            array[window] = 1
    assert sent == []


def test_sent_documents_replace_what_was_under_their_prefix_alone(s3: Bucket):
    remote = s3.url("out.zarr")
    fs, root = urls.filesystem(remote)
    fs.pipe({f"{root}/x/old/zarr.json": b"{}", f"{root}/x10/zarr.json": b"{}"})
    documents: dict = {}
    memory_group(documents).create_group("x").create_group("y")
    send_documents(remote, "x", documents)
    assert sorted(objects(remote)) == ["x/y/zarr.json", "x/zarr.json", "x10/zarr.json"]
