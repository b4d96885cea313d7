"""Preparing the store and fanning pairs out to it, without Prefect."""

from __future__ import annotations

import pytest

from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import PairLayout, find_pairs
from segflow.tasks.ingest.samples import SampleChecks
from segflow.tasks.ingest.writing import prepare_store, write_samples
from segflow.tasks.storage.dataset_writer import committed_samples
from segflow.tasks.storage.image_io import SizeLimits, sha256_file
from tests.images import make_source

BINARY = MaskRules(num_classes=2, foreground_value=None, invert=False)
LAYOUT = PairLayout(images_dir="images", masks_dir="masks", mask_suffix="")
CLASSES = ("background", "foreground")


def _write(pairs, store, stored, workers=1, log=None):
    options = {"log": log} if log else {}
    return write_samples(
        pairs,
        store,
        rules=BINARY,
        checks=SampleChecks(SizeLimits(10**9, 10**9), image_format=None),
        stored=stored,
        workers=workers,
        dask_address=None,
        **options,
    )


def test_prepare_store_creates_checks_and_lists_the_store(tmp_path):
    store = tmp_path / "ds.zarr"
    assert prepare_store(store, CLASSES) == {}
    pairs, _ = find_pairs(make_source(tmp_path / "src", n=3), LAYOUT)
    list(_write(pairs, store, {}))
    held = prepare_store(store, CLASSES)
    assert sorted(held) == ["s00", "s01", "s02"]
    assert held["s01"].image_sha256 == sha256_file(pairs[1].image)
    with pytest.raises(ValueError, match="holds classes"):
        prepare_store(store, ("background", "a", "b"))


def test_in_process_outcomes_come_one_at_a_time_and_stored_pairs_are_skipped(tmp_path):
    source = make_source(tmp_path / "src", n=4)
    (source / "images" / "s01.png").write_bytes(b"\x89PNG broken")
    store = tmp_path / "ds.zarr"
    pairs, _ = find_pairs(source, LAYOUT)
    messages: list[str] = []
    run = _write(pairs, store, prepare_store(store, CLASSES), log=messages.append)
    first = next(run)
    # Yielded as soon as written: the later pairs are not in the store yet.
    assert (first.sample_id, first.status) == ("s00", "written")
    assert list(committed_samples(store)) == ["s00"]
    outcomes = [first, *run]
    assert [o.status for o in outcomes] == ["written", "rejected", "written", "written"]
    assert outcomes[1].path == str(source / "images" / "s01.png")
    assert messages == []  # no cluster was started
    again = _write(pairs, store, prepare_store(store, CLASSES))
    assert [o.status for o in again] == ["unchanged", "rejected", "unchanged", "unchanged"]


def test_dask_fan_out_reports_the_dashboard_and_every_pair(tmp_path):
    pairs, _ = find_pairs(make_source(tmp_path / "src", n=4), LAYOUT)
    store = tmp_path / "ds.zarr"
    messages: list[str] = []
    outcomes = list(_write(pairs, store, prepare_store(store, CLASSES), 2, messages.append))
    assert sorted((o.sample_id, o.status) for o in outcomes) == [
        (f"s{i:02d}", "written") for i in range(4)
    ]
    assert len(messages) == 1 and messages[0].startswith("Dask dashboard: http")
    assert sorted(committed_samples(store)) == [f"s{i:02d}" for i in range(4)]


def test_a_small_job_runs_in_this_process_and_a_large_one_on_a_cluster(tmp_path, monkeypatch):
    from segflow.tasks.ingest import writing
    from segflow.tasks.runtime.cluster import default_workers

    pairs, _ = find_pairs(make_source(tmp_path / "src", n=4, size=(40, 56)), LAYOUT)
    assert writing.planned_workers(pairs, None, None) == 1  # 4 x 40 x 56 is no job for a cluster
    assert writing.planned_workers(pairs, 3, None) == 3  # as asked
    assert writing.planned_workers(pairs, None, "tcp://h:8786") == default_workers()
    monkeypatch.setattr(writing, "IN_PROCESS_BYTES", 4 * 40 * 56 * 2)  # images + masks: not less
    assert writing.planned_workers(pairs, None, None) == default_workers()
