"""A prediction store on object storage (moto's S3 server): the same objects as on disk, a block
made of whole-shard PUTs, a block killed before its mask redone on resume."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import s3fs
import zarr

from segflow.tasks.infer.blocks import predict_blocks
from segflow.tasks.infer.output import build_pyramids, label_instances, prepare_predictions
from segflow.tasks.infer.sources import find_sources
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import block_done, create_image_arrays
from segflow.tasks.storage.pyramid import write_pyramid
from tests.images import save, tiny_bundle
from tests.servers import Bucket
from tests.tasks.infer.test_blocks import settings
from tests.tasks.storage.test_staging import objects, operations, record_requests

BLOCK = 256
# Three levels (2100 x 300, 1050 x 150, 525 x 75); at level 0 eight blocks of 1 x 2 shards, the
# last of 2 x 2 (a remainder under half a block joins the last block).
SHAPE = (2100, 300)


@pytest.fixture
def inputs(tmp_path):
    """(one PNG image, a tiny model bundle)."""
    rng = np.random.default_rng(0)
    image = save(tmp_path / "in" / "x.png", rng.integers(0, 255, SHAPE, dtype=np.uint8))
    return image, tiny_bundle(tmp_path / "bundle", seed=0, head_scale=20.0)


def prepare(inputs, out: str):
    """The store `out` created for the image; (sources, block settings)."""
    image, bundle = inputs
    sources, _ = find_sources(str(image))
    config = settings(bundle, block=BLOCK)
    folder, _ = prepare_predictions(
        sources,
        out,
        model_uri=str(bundle),
        settings={"block": BLOCK, "probability_dtype": "uint8", "threshold": 0.5},
    )
    return sources, replace(config, bundle=folder)


def predict(inputs, out: str) -> tuple[int, int, dict[str, str]]:
    """What `segflow infer` does, in this process: create, predict, pyramids, instances."""
    sources, config = prepare(inputs, out)
    result = predict_blocks(sources, out, config, workers=1, dask_address=None, log=print)
    build_pyramids(out, ["x"], block=BLOCK)
    label_instances(out, ["x"], min_size=1, block=BLOCK)
    return result


def test_predictions_on_s3_are_the_local_ones_byte_for_byte(tmp_path, s3: Bucket, inputs):
    local, remote = str(tmp_path / "out.zarr"), s3.url("out.zarr")
    assert predict(inputs, local) == predict(inputs, remote) == (8, 0, {})
    want, got = objects(local), objects(remote)
    assert sorted(got) == sorted(want)
    assert {"x/2/c/0/1/0", "x/labels/mask/2/c/0/1/0", "x/labels/instances/2/zarr.json"} <= set(got)
    for key, data in want.items():
        assert got[key] == data, key
    plain, on_disk = zarr.open_group(remote, mode="r"), zarr.open_group(local, mode="r")
    arrays = dict(on_disk["x"].arrays()) | {
        f"labels/{label}/{level}": on_disk[f"x/labels/{label}/{level}"]
        for label in ("mask", "instances")
        for level in range(3)
    }
    assert len(arrays) == 9
    for path, array in arrays.items():
        np.testing.assert_array_equal(plain[f"x/{path}"][...], array[...], err_msg=path)
    assert 0 < plain["x/labels/mask/0"][...].mean() < 1


def test_a_block_killed_before_its_mask_is_not_done_and_is_predicted_again(
    tmp_path, s3: Bucket, inputs, monkeypatch
):
    local, remote = str(tmp_path / "out.zarr"), s3.url("out.zarr")
    predict(inputs, local)
    sources, config = prepare(inputs, remote)
    regions = blocks(SHAPE, BLOCK)
    killed = regions[3]  # rows 768-1024: shards c/0/3/0 and c/0/3/1
    pipe_file = s3fs.S3FileSystem._pipe_file

    async def dies_before_the_mask(self, path, *args, **kwargs):
        if "labels/mask/0/c/0/3/" in path:  # its probabilities are sent by then
            raise ConnectionResetError("killed between the probabilities and the mask")
        return await pipe_file(self, path, *args, **kwargs)

    with monkeypatch.context() as broken:
        broken.setattr(s3fs.S3FileSystem, "_pipe_file", dies_before_the_mask)
        _, _, failed = predict_blocks(
            sources, remote, config, workers=1, dask_address=None, log=print
        )
    assert failed == {"x": "ConnectionResetError: killed between the probabilities and the mask"}
    fs = s3fs.S3FileSystem()
    assert fs.exists(f"{s3.name}/out.zarr/x/0/c/0/3/1")
    assert not fs.exists(f"{s3.name}/out.zarr/x/labels/mask/0/c/0/3/0")
    assert [r for r in regions if not block_done(remote, "x", r, BLOCK)] == [killed]

    assert predict(inputs, remote) == (1, 7, {})  # the resume predicts that block alone
    got, want = objects(remote), objects(local)
    assert sorted(got) == sorted(want)
    for key, data in want.items():
        assert got[key] == data, key


def test_an_image_shows_on_s3_once_all_its_arrays_do(tmp_path, s3: Bucket, monkeypatch):
    local, remote = tmp_path / "out.zarr", s3.url("out.zarr")
    create = partial(
        create_image_arrays,
        name="x",
        shape=SHAPE,
        class_names=("background", "fg"),
        classes=1,
        block=BLOCK,
        probability_dtype="uint8",
        attrs={"lineage": {"sha256": "0"}},
    )
    pipe_file = s3fs.S3FileSystem._pipe_file

    async def dies_before_the_group(self, path, *args, **kwargs):
        if path.endswith("out.zarr/x/zarr.json"):
            raise ConnectionResetError("killed before the image's group")
        return await pipe_file(self, path, *args, **kwargs)

    with monkeypatch.context() as broken:
        broken.setattr(s3fs.S3FileSystem, "_pipe_file", dies_before_the_group)
        with pytest.raises(ConnectionResetError):
            create(remote)
    assert s3fs.S3FileSystem().exists(f"{s3.name}/out.zarr/x/labels/mask/2/zarr.json")
    assert "x" not in zarr.open_group(remote, mode="r")  # not shown half made
    sent = record_requests(monkeypatch)
    create(remote)  # replaces what the kill left
    # the 9 documents, each one PUT; a few reads and the removal of the leftovers
    assert operations(sent)["PUT"] == 9 and len(sent) <= 9 + 6, sent
    create(local)
    assert objects(remote) == objects(local)


def test_predicting_on_s3_is_one_put_per_shard_mask_last_and_a_level_one_get_per_shard_above(
    tmp_path, s3: Bucket, inputs, monkeypatch
):
    remote = s3.url("out.zarr")
    # a model that predicts nothing: all-background shards are stored too, they mark blocks done
    silent = tiny_bundle(tmp_path / "silent", head_bias=-100.0)
    sources, config = prepare((inputs[0], silent), remote)
    sent = record_requests(monkeypatch)
    assert predict_blocks(sources, remote, config, workers=1, dask_address=None, log=print) == (
        8,
        0,
        {},
    )
    read = [key for op, key, _ in sent if op == "GET"]
    assert sorted(read) == [  # the index and the arrays' metadata once, not once per block
        "out.zarr/x/0/zarr.json",
        "out.zarr/x/labels/mask/0/zarr.json",
        "out.zarr/x/zarr.json",
        "out.zarr/zarr.json",
    ]
    puts = [key.split("/c/")[0].removeprefix("out.zarr/x/") for op, key, _ in sent if op == "PUT"]
    one_by_two, two_by_two = ["0"] * 2 + ["labels/mask/0"] * 2, ["0"] * 4 + ["labels/mask/0"] * 4
    assert puts == one_by_two * 7 + two_by_two  # each block: its probabilities, then its mask
    assert all(block_done(remote, "x", r, BLOCK) for r in blocks(SHAPE, BLOCK))
    assert not zarr.open_group(remote, mode="r")["x/labels/mask/0"][...].any()

    sent.clear()
    assert write_pyramid(remote, "x", BLOCK) == 4 + 2
    shard_gets = Counter(key.split("/c/")[0] for op, key, _ in sent if op == "GET" and "/c/" in key)
    # each shard of levels 0 and 1 read once (9 x 2, 5 x 1), whole; one PUT per shard written
    assert shard_gets == {
        "out.zarr/x/0": 18,
        "out.zarr/x/labels/mask/0": 18,
        "out.zarr/x/1": 5,
        "out.zarr/x/labels/mask/1": 5,
    }
    assert operations(sent)["PUT"] == 2 * (5 + 3) and operations(sent)["GET range"] == 0
