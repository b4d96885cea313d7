"""``segflow ingest`` and ``segflow infer`` writing to S3 (moto's server), killed with SIGKILL
at seeded moments, then re-run: the store equals that of an undisturbed local run, and no sample
was ever shown committed before it was whole (issue 16, part 2's resume)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from segflow.tasks.storage import urls
from segflow.tasks.storage.dataset import Dataset, open_dataset
from segflow.tasks.storage.dataset_writer import StoredSample, committed_samples
from tests.crash.commands import kill_when, left_running, run, start
from tests.crash.test_infer_crash import all_arrays
from tests.images import make_source, save, tiny_bundle
from tests.remote import upload
from tests.servers import Bucket

# The real command, run three times per test (20-40 s each on a loaded 2-core machine):
# `.ci/run` runs these tests.
pytestmark = pytest.mark.slow

PAIRS = 24
SIZE = (1100, 160)  # two shards per array: a sample is several objects on S3
SLOW_S3 = Path(__file__).with_name("slow_s3")  # its sitecustomize delays chunk writes


def _ingest(source, store) -> list:
    return ["ingest", source, store, "--workers", "2"]


def checked_commits(store: str, want: Dataset, seen: dict[str, StoredSample]) -> int:
    """How many samples `store` shows committed, after checking that each reads back whole:
    pixels and class counts equal those of the undisturbed store `want`. A sample is read
    when its commit is new or changed since the last call (`seen`: what was checked)."""
    try:
        committed = committed_samples(store)
    except (FileNotFoundError, KeyError):  # the store or its groups are not made yet
        return 0
    root = urls.open_group(store)
    for sample_id, stored in committed.items():
        if seen.get(sample_id) == stored:
            continue
        for group, array in (("images", want.image), ("masks", want.mask)):
            got = root[f"{group}/{sample_id}"][...]
            np.testing.assert_array_equal(got, array(sample_id)[...], err_msg=sample_id)
        assert list(stored.class_counts) == want.class_counts(sample_id)
        seen[sample_id] = stored
    return len(committed)


def test_ingest_to_s3_killed_reruns_to_the_local_store(tmp_path, home, s3: Bucket, monkeypatch):
    local = make_source(tmp_path / "src", n=PAIRS, size=SIZE, seed=5)
    source, store = upload(local, s3.url("raw")), s3.url("ds.zarr")
    reference = tmp_path / "reference.zarr"
    run(_ingest(local, reference), home, tmp_path / "reference.log")
    want = open_dataset(reference)
    # a moment: 1-3 samples committed (each poll until then checks what it shows), and then
    # some more time, so that a write is under way; chunk writes made slow (slow_s3/), so
    # that a sample shown committed too early is met by a poll
    rng = np.random.default_rng(5)
    stored, delay, seen = int(rng.integers(1, 4)), float(rng.uniform(0, 0.3)), {}
    with monkeypatch.context() as slow:
        slow.setenv(
            "PYTHONPATH",
            os.pathsep.join(filter(None, [str(SLOW_S3), os.environ.get("PYTHONPATH")])),
        )
        slow.setenv("SEGFLOW_TEST_S3_CHUNK_DELAY", "0.5")
        proc = start(_ingest(source, store), home, tmp_path / "kill.log")
    started = kill_when(proc, lambda: checked_commits(store, want, seen) >= stored, delay=delay)
    assert not left_running(started)
    left = checked_commits(store, want, {})  # what the kill left: whole samples only
    assert left < PAIRS, "the kill came too late to interrupt anything"
    run(_ingest(source, store), home, tmp_path / "rerun.log")

    got = open_dataset(store)
    assert got.samples() == want.samples() and len(want.samples()) == PAIRS
    assert got.meta["split"] == want.meta["split"]
    assert checked_commits(store, want, {}) == PAIRS  # every pixel and class count


def _shards(output) -> int:
    """Shards written under the prediction store `output` (a path or URL) so far, those of the
    model bundle's arrays excluded."""
    fs, path = urls.filesystem(output)
    keys = [key.removeprefix(path.rstrip("/")) for key in fs.find(path)]
    return sum("/c/" in key and not key.startswith("/model/") for key in keys)


def test_inference_to_s3_killed_reruns_to_the_local_output(tmp_path, home, s3: Bucket):
    rng = np.random.default_rng(6)
    images = tmp_path / "in"
    for i in range(3):
        save(images / f"im{i}.png", rng.integers(0, 255, (700, 600), dtype=np.uint8))
    bundle = tiny_bundle(tmp_path / "bundle", seed=0, head_scale=20.0)
    common = ["--model", bundle, "--tile", "64", "--block", "256", "--workers", "2"]
    reference, out = tmp_path / "reference.zarr", s3.url("out.zarr")
    run(["infer", images, reference, *common], home, tmp_path / "reference.log")
    total = _shards(reference)
    # a moment: up to a quarter of the shards written, and then some more time
    more, delay = int(rng.integers(1, total // 4)), float(rng.uniform(0, 0.3))
    proc = start(["infer", images, out, *common], home, tmp_path / "kill.log")
    started = kill_when(proc, lambda: _shards(out) >= more, delay=delay)
    assert not left_running(started)
    assert _shards(out) < total, "the kill came too late to interrupt anything"
    run(["infer", images, out, *common], home, tmp_path / "rerun.log")

    want, got = all_arrays(reference), all_arrays(out)
    assert sorted(got) == sorted(want) and len(want) >= 6
    for path, array in want.items():
        np.testing.assert_array_equal(got[path], array, err_msg=path)
