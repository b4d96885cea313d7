"""Prefect tasks of the ingest stage: thin wrappers that add retries on I/O and logging."""

from __future__ import annotations

from collections import Counter

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from segflow.tasks.ingest import index, samples, writing
from segflow.tasks.ingest import pairs as source_pairs
from segflow.tasks.ingest import source_split as splits
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import Pair, PairLayout, Rejection
from segflow.tasks.ingest.samples import PairOutcome, SampleChecks
from segflow.tasks.ingest.source_split import SourceSplit
from segflow.tasks.storage.dataset_writer import StoredSample
from segflow.tasks.storage.image_io import ImageFormat, SizeLimits


@task(name="prepare-store", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def prepare_store(store: str, class_names: tuple[str, ...]) -> dict[str, StoredSample]:
    """Create or check the store (see :func:`writing.prepare_store`)."""
    samples = writing.prepare_store(store, class_names)
    get_run_logger().info("%s holds %d samples", store, len(samples))
    return samples


@task(name="discover-pairs", cache_policy=NO_CACHE)
def find_pairs(source: str, layout: PairLayout) -> tuple[list[Pair], list[Rejection]]:
    """Match images with masks under `source` (see :func:`pairs.find_pairs`)."""
    pairs, rejected = source_pairs.find_pairs(source, layout)
    get_run_logger().info("found %d pairs, %d unpaired files", len(pairs), len(rejected))
    return pairs, rejected


@task(name="read-source-split", cache_policy=NO_CACHE)
def source_split(source: str, pairs: list[Pair], split_file: str | None) -> SourceSplit:
    """The split the source gives (see :func:`source_split.source_split`); logs its origin."""
    given = splits.source_split(source, pairs, split_file)
    get_run_logger().info("split from %s: %d samples assigned", given.origin, len(given.assigned))
    return given


@task(name="decide-format", cache_policy=NO_CACHE)
def sample_checks(
    store: str, pairs: list[Pair], stored: dict[str, StoredSample], limits: SizeLimits
) -> SampleChecks:
    """What every pair must pass (see :func:`samples.sample_checks`); logs the store's format."""
    checks = samples.sample_checks(store, pairs, stored.keys(), limits)
    get_run_logger().info("%s takes images of %s", store, checks.image_format or "any format")
    return checks


@task(name="write-samples", cache_policy=NO_CACHE)
def write_samples(
    pairs: list[Pair],
    store: str,
    rules: MaskRules,
    checks: SampleChecks,
    stored: dict[str, StoredSample],
    workers: int | None,
    dask_address: str | None,
) -> list[PairOutcome]:
    """Ingest every pair (see :func:`writing.write_samples`), logging progress."""
    log = get_run_logger()
    outcomes = writing.write_samples(
        pairs,
        store,
        rules=rules,
        checks=checks,
        stored=stored,
        workers=workers,
        dask_address=dask_address,
        log=log.info,
    )
    done: list[PairOutcome] = []
    # Progress every 5 %: each log line is an API call, and the flow shares the CPU with workers.
    every = max(1, len(pairs) // 20)
    for outcome in outcomes:
        done.append(outcome)
        if outcome.status == "rejected":
            log.warning("rejected %s: %s", outcome.path, outcome.reason)
        if len(done) % every == 0 or len(done) == len(pairs):
            log.info("[%d/%d] %s", len(done), len(pairs), dict(Counter(o.status for o in done)))
    return done


@task(name="index-store", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def build_index(
    store: str,
    rejected: list[Rejection],
    fractions: dict[str, float],
    seed: int,
    source_split: SourceSplit,
    image_format: ImageFormat | None = None,
) -> dict:
    """Write the split and the summary into the store (see :func:`index.build_index`)."""
    return index.build_index(
        store,
        rejected=rejected,
        fractions=fractions,
        seed=seed,
        source_split=source_split,
        image_format=image_format,
    )
