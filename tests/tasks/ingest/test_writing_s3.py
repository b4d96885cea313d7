"""Ingest into a store on s3:// (moto's server), as the flow runs it: the requests each pair
costs, and the same store as a local ingest, in larger shards."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from segflow.tasks.ingest.index import build_index
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import PairLayout, find_pairs
from segflow.tasks.ingest.samples import sample_checks
from segflow.tasks.ingest.writing import prepare_store, write_samples
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import lock_store
from segflow.tasks.storage.image_io import SizeLimits
from tests.images import make_source
from tests.servers import Bucket
from tests.tasks.storage.test_staging import objects, operations, record_requests

LAYOUT = PairLayout(images_dir="images", masks_dir="masks", mask_suffix="")
RULES = MaskRules(num_classes=2, foreground_value=None, invert=False)
CLASSES = ("background", "foreground")
# Two shards per array on S3 (shards of 2048 rows): 4 shard objects per pair; 3 per array locally.
SIZE = (2100, 160)

# What a pair written to S3 costs: one listing of each array's folder (what the store holds of
# the sample), one PUT per object (4 shards, 2 zarr.json, the mask's last: the commit), and
# when the store is indexed one GET of each array's zarr.json. No metadata read, no existence
# probe, no delete for a new sample.
NEW_PAIR = {"LIST": 2, "PUT": 6, "GET": 2}
# What an unchanged pair costs on a re-ingest: its two zarr.json read to list the store's
# samples, again to index it.
UNCHANGED_PAIR = {"GET": 4}


def ingest(source, store, sent: list) -> dict[str, Counter]:
    """Ingest `source` into `store` as the ingest-dataset flow does, in this process; the
    requests sent by each step."""
    pairs, unpaired = find_pairs(source, LAYOUT)
    steps: dict[str, Counter] = {}
    with lock_store(store):
        mark = len(sent)
        stored = prepare_store(store, CLASSES)
        checks = sample_checks(store, pairs, stored.keys(), SizeLimits(10**9, 10**9))
        steps["prepare"], mark = operations(sent[mark:]), len(sent)
        outcomes = list(
            write_samples(
                pairs,
                store,
                rules=RULES,
                checks=checks,
                stored=stored,
                workers=1,
                dask_address=None,
            )
        )
        assert all(o.status in ("written", "unchanged") for o in outcomes)
        steps["write"], mark = operations(sent[mark:]), len(sent)
        fractions = {"train": 0.5, "val": 0.5, "test": 0.0}
        build_index(
            store, rejected=unpaired, fractions=fractions, seed=0, image_format=checks.image_format
        )
        steps["index"] = operations(sent[mark:])
    return steps


def per_pair(small: dict[str, Counter], large: dict[str, Counter], more: int) -> Counter:
    """Requests that `more` pairs added, per pair: what grows with the pairs, apart from what a
    run costs once."""
    grown = sum(large.values(), Counter()) - sum(small.values(), Counter())
    return Counter({op: count / more for op, count in grown.items()})


@pytest.fixture
def sources(tmp_path):
    """Two sources on disk: 2 pairs, and the same 2 pairs plus 3 more."""
    return (
        make_source(tmp_path / "src2", n=2, size=SIZE, seed=1),
        make_source(tmp_path / "src5", n=5, size=SIZE, seed=1),
    )


def test_requests_per_pair_ingested_into_s3(sources, s3: Bucket, monkeypatch):
    few, many = sources
    sent = record_requests(monkeypatch)
    first = {n: ingest(src, s3.url(f"ds{n}.zarr"), sent) for n, src in ((2, few), (5, many))}
    assert per_pair(first[2], first[5], 3) == NEW_PAIR
    # writing a pair sends exactly its listings and objects: nothing read, probed or deleted
    assert first[5]["write"] == {"LIST": 2 * 5, "PUT": 6 * 5}
    # and a run costs a bounded number of requests besides (store creation, checks, index)
    rest = sum(first[5].values(), Counter()) - Counter({op: 5 * n for op, n in NEW_PAIR.items()})
    assert rest.total() <= 25, rest

    again = {n: ingest(src, s3.url(f"ds{n}.zarr"), sent) for n, src in ((2, few), (5, many))}
    assert per_pair(again[2], again[5], 3) == UNCHANGED_PAIR
    assert again[5]["write"] == {}  # unchanged pairs are skipped without a request


def test_a_store_ingested_into_s3_holds_what_the_local_one_does_in_larger_shards(
    sources, tmp_path, s3: Bucket, monkeypatch
):
    _, source = sources
    sent = record_requests(monkeypatch)
    remote, local = s3.url("ds.zarr"), tmp_path / "ds.zarr"
    for store in (remote, local):
        ingest(source, store, sent)
    shards = {store: sum("/c/" in key for key in objects(store)) for store in (remote, local)}
    assert shards == {remote: 4 * 5, local: 6 * 5}
    on_s3, on_disk = open_dataset(remote), open_dataset(local)
    assert on_s3.meta == on_disk.meta  # classes, split, summary
    assert on_s3.samples() == on_disk.samples()
    for sample_id in on_disk.samples():
        for name in ("image", "mask"):
            there, here = getattr(on_s3, name)(sample_id), getattr(on_disk, name)(sample_id)
            assert there.shards[-2:] == (2048, 2048) and here.shards[-2:] == (1024, 1024)
            assert there.attrs.asdict() == here.attrs.asdict()
            np.testing.assert_array_equal(there[...], here[...])
