"""``segflow ingest`` with its Dask workers, killed with SIGKILL at seeded moments, then re-run:
the store equals an undisturbed one, pixel for pixel, with every sample once."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from segflow.tasks.storage.dataset import open_dataset
from tests.crash.commands import kill_when, left_running, run, start
from tests.images import make_source

# The real command, run several times (~20 s each here): `.ci/run` runs these tests.
pytestmark = pytest.mark.slow

PAIRS = 40


def _ingest(source, store) -> list:
    return ["ingest", source, store, "--workers", "2"]


def _assert_same_store(store, reference) -> None:
    got, want = open_dataset(store), open_dataset(reference)
    assert got.samples() == want.samples() and len(want.samples()) == PAIRS
    split = [i for part in ("train", "val", "test") for i in got.samples(part)]
    assert sorted(split) == got.samples()  # every sample in exactly one part
    for part in ("train", "val", "test"):
        assert got.samples(part) == want.samples(part)
    for sample_id in want.samples():
        np.testing.assert_array_equal(got.image(sample_id)[...], want.image(sample_id)[...])
        np.testing.assert_array_equal(got.mask(sample_id)[...], want.mask(sample_id)[...])
        assert got.class_counts(sample_id) == want.class_counts(sample_id)
    root = zarr.open_group(store, mode="r")
    assert sorted(root["images"].array_keys()) == sorted(root["masks"].array_keys())
    assert not list((store / ".staging").glob("*"))  # nothing half-written left behind


def kill_and_rerun(tmp_path, home, seed: int, kills: int) -> None:
    """Kill a fresh ingest `kills` times at seeded moments, re-run it to the end, compare."""
    source = make_source(tmp_path / "src", n=PAIRS, size=(384, 384), seed=seed)
    reference, store = tmp_path / "reference.zarr", tmp_path / "ds.zarr"
    run(_ingest(source, reference), home, tmp_path / "reference.log")
    rng = np.random.default_rng(seed)
    masks = store / "masks"
    for attempt in range(kills):
        # a moment: k samples stored (0: while Prefect, the cluster or the first sample starts)
        stored, delay = int(rng.integers(0, PAIRS // 2)), float(rng.uniform(0, 0.05))
        if stored == 0:
            delay = float(rng.uniform(0, 8))
        proc = start(_ingest(source, store), home, tmp_path / f"kill{attempt}.log")
        started = kill_when(proc, lambda k=stored: len(list(masks.glob("s*"))) >= k, delay=delay)
        assert not left_running(started)
    run(_ingest(source, store), home, tmp_path / "rerun.log")
    _assert_same_store(store, reference)


def test_killed_ingest_reruns_to_the_undisturbed_store(tmp_path, home):
    kill_and_rerun(tmp_path, home, seed=1, kills=1)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_ingest_killed_again_and_again_reruns_to_the_undisturbed_store(tmp_path, home, seed):
    kill_and_rerun(tmp_path, home, seed=seed, kills=3)
