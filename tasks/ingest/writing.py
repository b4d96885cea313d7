"""Write many pairs into the dataset store: prepare the store, then fan the pairs out.

Pairs are ingested in this process when one local worker is asked for (no cluster start-up
cost), else on a Dask LocalCluster or an existing cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from dask.distributed import as_completed

from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import Pair
from segflow.tasks.ingest.samples import PairOutcome, ingest_pair, ingest_pair_with
from segflow.tasks.runtime.cluster import dask_client, default_workers
from segflow.tasks.storage.dataset_writer import StoredSample, committed_samples, init_store

_log = logging.getLogger(__name__)


def prepare_store(store: str | Path, class_names: Sequence[str]) -> dict[str, StoredSample]:
    """Create the store, or check an existing one holds `class_names`, and list its samples.

    Returns
    -------
    dict
        Sample id -> :class:`StoredSample` of every committed sample.

    Raises
    ------
    ValueError
        If `store` holds other classes or is a folder that is not a Zarr store.
    """
    init_store(store, class_names=tuple(class_names))
    return committed_samples(store)


def write_samples(
    pairs: Sequence[Pair],
    store: str | Path,
    *,
    rules: MaskRules,
    max_pixels: int,
    stored: Mapping[str, StoredSample],
    workers: int | None,
    dask_address: str | None,
    log: Callable[[str], None] = _log.info,
) -> Iterator[PairOutcome]:
    """Ingest every pair (:func:`~segflow.tasks.ingest.samples.ingest_pair`), yielding each
    outcome as it finishes, in completion order.

    Parameters
    ----------
    stored
        What the store already holds (from :func:`prepare_store`): unchanged pairs are skipped.
    workers
        Dask worker processes, ``None`` for one per CPU core; with 1 and no `dask_address` the
        pairs are ingested in this process, one after the other.
    dask_address
        Scheduler of an existing cluster; ``None`` starts a LocalCluster of `workers`.
    log
        Receives the Dask dashboard address.

    Raises
    ------
    Exception
        Whatever a pair raises beyond bad input (bad input is a ``rejected`` outcome).
    """
    workers = workers or default_workers()
    options = {"store": store, "rules": rules, "max_pixels": max_pixels, "workers": workers}
    if workers == 1 and not dask_address:
        for pair in pairs:
            yield ingest_pair(pair, stored=stored.get(pair.sample_id), **options)
        return
    with dask_client(dask_address, workers=workers) as client:
        log(f"Dask dashboard: {client.dashboard_link}")
        previous = [stored.get(pair.sample_id) for pair in pairs]
        futures = client.map(ingest_pair_with, pairs, previous, options=options, pure=False)
        for future in as_completed(futures):
            yield future.result()
