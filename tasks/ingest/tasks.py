"""Prefect tasks of the ingest stage: thin wrappers that add retries on I/O and logging."""

from __future__ import annotations

from collections import Counter

from dask.distributed import as_completed
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from segflow.tasks.ingest.index import build_index
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import Pair, Rejection, find_pairs
from segflow.tasks.ingest.samples import PairOutcome, ingest_pair, ingest_pair_with
from segflow.tasks.runtime.cluster import dask_client, default_workers
from segflow.tasks.storage.dataset_writer import (
    StoredSample,
    committed_samples,
    init_store,
)


@task(name="prepare-store", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def prepare_store(store: str, class_names: tuple[str, ...]) -> dict[str, StoredSample]:
    """Create or check the store and list what it already holds."""
    init_store(store, class_names=class_names)
    samples = committed_samples(store)
    get_run_logger().info("%s holds %d samples", store, len(samples))
    return samples


@task(name="discover-pairs", cache_policy=NO_CACHE)
def discover_pairs(
    source: str, images_dir: str, masks_dir: str, mask_suffix: str
) -> tuple[list[Pair], list[Rejection]]:
    """Match images with masks under `source`."""
    pairs, rejected = find_pairs(
        source, images_dir=images_dir, masks_dir=masks_dir, mask_suffix=mask_suffix
    )
    get_run_logger().info("found %d pairs, %d unpaired files", len(pairs), len(rejected))
    return pairs, rejected


@task(name="write-samples", cache_policy=NO_CACHE)
def write_samples(
    pairs: list[Pair],
    store: str,
    rules: MaskRules,
    max_pixels: int,
    stored: dict[str, StoredSample],
    workers: int | None,
    dask_address: str | None,
) -> list[PairOutcome]:
    """Ingest every pair on a Dask cluster (in this process when one local worker is asked for)."""
    log = get_run_logger()
    workers = workers or default_workers()
    options = {"store": store, "rules": rules, "max_pixels": max_pixels, "workers": workers}
    outcomes: list[PairOutcome] = []

    # Progress every 5 %: each log line is an API call, and the flow shares the CPU with workers.
    every = max(1, len(pairs) // 20)

    def record(outcome: PairOutcome) -> None:
        outcomes.append(outcome)
        if outcome.status == "rejected":
            log.warning("rejected %s: %s", outcome.path, outcome.reason)
        if len(outcomes) % every == 0 or len(outcomes) == len(pairs):
            done = Counter(o.status for o in outcomes)
            log.info("[%d/%d] %s", len(outcomes), len(pairs), dict(done))

    if workers == 1 and not dask_address:
        for pair in pairs:
            record(ingest_pair(pair, stored=stored.get(pair.sample_id), **options))
        return outcomes
    with dask_client(dask_address, workers=workers) as client:
        log.info("Dask dashboard: %s", client.dashboard_link)
        previous = [stored.get(pair.sample_id) for pair in pairs]
        futures = client.map(ingest_pair_with, pairs, previous, options=options, pure=False)
        for future in as_completed(futures):
            record(future.result())
    return outcomes


@task(name="index-store", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def index_store(
    store: str, rejected: list[Rejection], fractions: dict[str, float], seed: int
) -> dict:
    """Write the split and the summary into the store."""
    return build_index(store, rejected=rejected, fractions=fractions, seed=seed)
