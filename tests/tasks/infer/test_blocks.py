"""Block inference end to end on a tiny model, without Prefect (Dask only where named)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import zarr

from segflow.models.unet import build_unet
from segflow.tasks.infer.blocks import (
    BlockSettings,
    predict_block,
    predict_blocks,
    resolve_parallelism,
)
from segflow.tasks.infer.output import prepare_predictions
from segflow.tasks.infer.sources import find_sources
from segflow.tasks.infer.tiling import Tiling
from segflow.tasks.storage.bundle import load_bundle, save_bundle
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import block_done, chunk_side
from tests.images import save, tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("model") / "bundle", seed=0, head_scale=20.0)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    save(folder / "a.png", rng.integers(0, 255, (300, 420), dtype=np.uint8))
    # with 256² blocks: a is 2 blocks (its 44 extra rows join the first), b is 2 x 2
    save(folder / "b.tif", rng.integers(0, 255, (449, 391), dtype=np.uint8), tile=(64, 64))
    return folder


def settings(bundle, *, tile=64, blend="overlap-tile", block=256, **kwargs):
    """Small tiles and blocks, fp32 in NCHW: what the tests vary, the rest fixed."""
    options = {
        "batch": 3,
        "tta": False,
        "threshold": 0.5,
        "precision": "fp32",
        "device": "cpu",
        "channels_last": False,
        "probability_dtype": "uint8",
        "torch_threads": 1,
    }
    return BlockSettings(
        bundle=str(bundle),
        tiling=Tiling(tile=tile, blend=blend, margin=8, overlap=0.25),
        block=block,
        **{**options, **kwargs},
    )


def prepare(sources, out, bundle, config):
    """Create the store `out` for `config`; `config` with the store's bundle copy."""
    bundle_path, _ = prepare_predictions(
        sources,
        str(out),
        model_uri=str(bundle),
        settings={
            "block": config.block,
            "probability_dtype": config.probability_dtype,
            "threshold": config.threshold,
        },
    )
    return replace(config, bundle=bundle_path)


def run(images, out, bundle, **kwargs):
    sources, _ = find_sources(str(images))
    config = prepare(sources, out, bundle, settings(bundle, **kwargs))
    return sources, predict_blocks(
        sources, str(out), config, workers=1, dask_address=None, log=print
    )


def whole_image(bundle, image, pad=32):
    """The untiled prediction, with the same mirrored borders as the tiled one."""
    model = load_bundle(bundle)
    padded = np.pad(image, pad, mode="symmetric")[None, None].astype(np.float32)
    return model.predict(padded)[0][:, pad:-pad, pad:-pad]


@pytest.mark.parametrize("blend", ["overlap-tile", "gaussian"])
def test_tiled_matches_whole_image_prediction(tmp_path, images, bundle, blend):
    sources, (predicted, skipped, failed) = run(
        images, tmp_path / "out.zarr", bundle, blend=blend, probability_dtype="float16", tile=128
    )
    assert failed == {} and skipped == 0 and predicted == 2 + 4
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    for source in sources:
        image = source.region(0, source.shape[1], 0, source.shape[2])[0]
        reference = whole_image(bundle, image)
        tiled = np.asarray(out[f"{source.name}/0"][...], dtype=np.float32)
        mask = out[f"{source.name}/labels/mask/0"][0]
        truth = reference[0] >= 0.5
        inter = np.logical_and(mask == 1, truth).sum()
        dice = 2 * inter / max(1, (mask == 1).sum() + truth.sum())
        # overlap-tile with a margin near the receptive field is seam-free; gaussian blending
        # mixes in window borders (zero-padded by the U-Net), so it agrees less closely
        assert dice >= (0.995 if blend == "overlap-tile" else 0.97)
        if blend == "overlap-tile":
            assert np.abs(tiled - reference).mean() < 0.02


def test_a_new_model_at_a_used_output_path_is_not_served_from_the_worker_cache(
    tmp_path, images, bundle
):
    """The in-process worker keeps models between runs (as a ``--dask-address`` cluster's
    workers do); an output deleted and re-predicted with another model must use that model."""
    model = load_bundle(bundle)
    state = dict(model.ensemble.members[0].state_dict())
    state["head.weight"], state["head.bias"] = -state["head.weight"], -state["head.bias"]
    other = save_bundle(
        tmp_path / "other",
        config=model.config,
        state_dicts=[state],
        mean=(100.0,),
        std=(50.0,),
        class_names=("background", "fg"),
    )
    out = tmp_path / "out.zarr"
    run(images, out, bundle)
    first = zarr.open_group(out, mode="r")["a/labels/mask/0"][...]
    shutil.rmtree(out)
    run(images, out, other)
    second = zarr.open_group(out, mode="r")["a/labels/mask/0"][...]
    shutil.rmtree(out)
    run(images, tmp_path / "fresh.zarr", other)  # the same model in a fresh output path
    expected = zarr.open_group(tmp_path / "fresh.zarr", mode="r")["a/labels/mask/0"][...]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, expected)


def test_resume_skips_written_blocks_and_output_is_identical(tmp_path, images, bundle):
    run(images, tmp_path / "a.zarr", bundle)
    sources, _ = find_sources(str(images))
    # simulate a kill: remove a mask shard (the "done" mark) of two blocks: the second shard of
    # a's block (0, 300, 256, 420), which spans two shard rows, and b's block (256, 449, 0, 256)
    for name, index in [("a", "1/1"), ("b", "1/0")]:
        (tmp_path / "a.zarr" / name / "labels/mask/0/c/0" / index).unlink()
    _, (predicted, skipped, failed) = run(images, tmp_path / "a.zarr", bundle)
    assert (predicted, skipped, failed) == (2, 4, {})
    run(images, tmp_path / "b.zarr", bundle)
    a, b = zarr.open_group(tmp_path / "a.zarr"), zarr.open_group(tmp_path / "b.zarr")
    for source in sources:
        np.testing.assert_array_equal(a[f"{source.name}/0"][...], b[f"{source.name}/0"][...])


def test_block_size_and_workers_do_not_change_the_result(tmp_path, images, bundle):
    run(images, tmp_path / "a.zarr", bundle, block=256)
    run(images, tmp_path / "b.zarr", bundle, block=512)
    a, b = zarr.open_group(tmp_path / "a.zarr"), zarr.open_group(tmp_path / "b.zarr")
    np.testing.assert_array_equal(a["a/0"][...], b["a/0"][...])


def test_output_is_ome_zarr(tmp_path, images, bundle):
    run(images, tmp_path / "out.zarr", bundle)
    meta = json.loads((tmp_path / "out.zarr" / "a" / "zarr.json").read_text())["attributes"]
    multiscale = meta["ome"]["multiscales"][0]
    assert meta["ome"]["version"] == "0.5"
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    assert multiscale["datasets"][0]["path"] == "0"
    labels = json.loads((tmp_path / "out.zarr/a/labels/zarr.json").read_text())["attributes"]
    assert labels["ome"]["labels"] == ["mask"]
    label = json.loads((tmp_path / "out.zarr/a/labels/mask/zarr.json").read_text())["attributes"]
    assert label["ome"]["image-label"]["source"]["image"] == "../../"
    root = zarr.open_group(tmp_path / "out.zarr", mode="r")
    assert root.attrs["segflow"]["model_sha256"] and root["a/0"].shape == (1, 300, 420)


def test_another_model_refuses_to_resume(tmp_path, images, bundle):
    run(images, tmp_path / "out.zarr", bundle)
    other = build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4)
    path = save_bundle(
        tmp_path / "other",
        config=other.config,
        state_dicts=[other.state_dict()],
        mean=(0.0,),
        std=(1.0,),
        class_names=("bg", "fg"),
    )
    with pytest.raises(ValueError, match="another model"):
        run(images, tmp_path / "out.zarr", path)


def test_blocks_cover_the_image_once():
    regions = blocks((300, 420), 256)
    covered = np.zeros((300, 420), int)
    for y0, y1, x0, x1 in regions:
        covered[y0:y1, x0:x1] += 1
    # 300 = 256 + 44: the thin remainder joins the first block; 420 = 256 + 164 stays two
    assert (covered == 1).all() and regions == [(0, 300, 0, 256), (0, 300, 256, 420)]


def test_parallelism_keeps_given_values_and_fills_the_others_for_the_machine(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    given = resolve_parallelism("cpu", workers=3, batch=5, torch_threads=7)
    assert (given.workers, given.batch, given.torch_threads) == (3, 5, 7)
    default = resolve_parallelism("cpu", workers=None, batch=None, torch_threads=None)
    assert (default.workers, default.batch, default.torch_threads) == (4, 1, 2)
    assert resolve_parallelism("cpu", workers=3, batch=None, torch_threads=None).torch_threads == 2


def test_inner_chunks_divide_the_block():
    assert [chunk_side(b) for b in (256, 512, 768, 2048)] == [256, 512, 256, 512]


def test_an_all_background_block_is_done(tmp_path, images):
    """A model that predicts nothing writes all-fill-value shards: they count as done."""
    silent = tiny_bundle(tmp_path / "silent", head_bias=-100.0)  # p ~ 0 everywhere
    out = tmp_path / "out.zarr"
    sources, (predicted, skipped, failed) = run(images, out, silent)
    assert (predicted, skipped, failed) == (6, 0, {})
    written = zarr.open_group(out, mode="r")
    assert not any(written[f"{s.name}/labels/mask/0"][...].any() for s in sources)
    for source in sources:
        regions = blocks(source.shape[1:], 256)
        assert all(block_done(out, source.name, r, 256) for r in regions)
    assert run(images, out, silent)[1] == (0, 6, {})  # nothing predicted again


def test_predict_block_writes_its_region_and_nothing_else(tmp_path, images, bundle):
    sources, _ = find_sources(str(images))
    out = tmp_path / "out.zarr"
    config = prepare(sources, out, bundle, settings(bundle, probability_dtype="float16"))
    first, second = blocks(sources[0].shape[1:], config.block)  # image a: two blocks
    y0, y1, x0, x1 = first
    assert predict_block(sources[0], str(out), first, config) == ("a", first)
    expected = whole_image(bundle, sources[0].region(0, 300, 0, 420)[0])[:, y0:y1, x0:x1]
    written = zarr.open_group(out, mode="r")["a"]
    probs = np.asarray(written["0"][:, y0:y1, x0:x1], dtype=np.float32)
    mask = written["labels/mask/0"][0, y0:y1, x0:x1]
    assert 0 < (expected[0] >= 0.5).mean() < 1  # both classes: a wrong write shows
    assert np.abs(probs - expected).mean() < 0.02
    assert (mask == (expected[0] >= 0.5)).mean() > 0.99
    assert block_done(out, "a", first, config.block)
    assert not block_done(out, "a", second, config.block)  # its neighbour stays unwritten
    assert not block_done(out, "b", (0, 449, 0, 391), config.block)
    assert not written["0"][:, :, x1:].any() and not written["labels/mask/0"][:, :, x1:].any()


def test_output_is_complete_when_a_worker_dies(tmp_path, images, bundle):
    """A worker killed while it predicts a block is replaced by its nanny and the block is
    predicted again."""
    import os
    import signal
    import threading
    import time

    from dask.distributed import Client, LocalCluster

    run(images, tmp_path / "ref.zarr", bundle, tta=True)
    sources, _ = find_sources(str(images))
    config = settings(bundle, tta=True)  # slower blocks: the kill lands mid-run
    in_flight = []  # the blocks the killed worker was predicting

    def executing(dask_worker):
        return [str(task.key) for task in dask_worker.state.executing]

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        (victim, pid), (_, survivor) = client.run(os.getpid).items()

        def kill_the_worker_while_it_predicts():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                busy = client.run(executing, workers=[victim])[victim]
                if any(key.startswith("predict_block") for key in busy):
                    os.kill(pid, signal.SIGKILL)
                    in_flight.extend(busy)
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_the_worker_while_it_predicts)
        killer.start()
        predicted, skipped, failed = predict_blocks(
            sources,
            str(tmp_path / "out.zarr"),
            prepare(sources, tmp_path / "out.zarr", bundle, config),
            workers=2,
            dask_address=cluster.scheduler_address,
            log=print,
        )
        killer.join()
        client.wait_for_workers(2, timeout=60)
        replacement = set(client.run(os.getpid).values()) - {pid, survivor}
    assert in_flight, "the worker was not killed while predicting a block"
    assert len(replacement) == 1  # a new worker joined in place of the killed one
    assert failed == {} and predicted == 6
    ref, out = zarr.open_group(tmp_path / "ref.zarr"), zarr.open_group(tmp_path / "out.zarr")
    for source in sources:
        np.testing.assert_array_equal(out[f"{source.name}/0"][...], ref[f"{source.name}/0"][...])


@pytest.mark.parametrize(("given", "used"), [(None, 0.8), (0.6, 0.6)])
def test_masks_use_the_models_threshold_unless_one_is_given(tmp_path, images, given, used):
    """A bundle trained by segflow carries its val-chosen threshold; `--threshold` wins."""
    bundle = tiny_bundle(tmp_path / "b", seed=0, head_scale=2.0, metadata={"threshold": 0.8})
    out = tmp_path / "out.zarr"
    run(images, out, bundle, threshold=given, probability_dtype="float16")
    store = zarr.open_group(out, mode="r")
    probs = np.asarray(store["a/0"][0], dtype=np.float32)
    mask = store["a/labels/mask/0"][0]
    disagree = (mask == 1) != (probs >= used)  # only where float16 rounding crosses it
    assert np.all(np.abs(probs[disagree] - used) < 2e-3)
    assert 0.05 < (mask == 1).mean() < 0.95
    assert store.attrs["segflow"]["settings"]["threshold"] == used
