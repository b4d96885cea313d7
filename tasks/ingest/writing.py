"""Write many pairs into the dataset store: prepare the store, then fan the pairs out.

Pairs are ingested in this process when one local worker is asked for, or when the job is too
small to pay for a cluster (:func:`planned_workers`), else on a Dask LocalCluster or an
existing cluster. A pair that fails beyond bad input
(an ``OSError``: disk full, permissions) ends the writing with :class:`SampleWriteError`, which
names it and carries the outcomes so far, so the caller can index what was committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from dask.distributed import as_completed

from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import Pair
from segflow.tasks.ingest.samples import PairOutcome, SampleChecks, ingest_pair, ingest_pair_with
from segflow.tasks.runtime.cluster import dask_client, default_workers
from segflow.tasks.storage.dataset_writer import StoredSample, committed_samples, init_store
from segflow.tasks.storage.image_io import InputError, probe_image

_log = logging.getLogger(__name__)


class SampleWriteError(RuntimeError):
    """Writing a sample failed for a reason outside the input (disk full, permissions).

    `outcomes` are the pairs finished before it; the failed sample left nothing in the store.
    """

    def __init__(self, store: str | Path, pair: Pair, cause: OSError, outcomes: list) -> None:
        super().__init__(f"{store}: writing sample {pair.sample_id} ({pair.image}) failed: {cause}")
        self.sample_id, self.outcomes = pair.sample_id, outcomes


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


# Below this many decoded bytes (images and masks) an ingest runs in its own process:
# starting and stopping a LocalCluster costs 2-4 s here, and two workers save about 6 s per GB
# over one process (65 vs 106 MB/s; benchmarks/README.md, "Ingest throughput").
IN_PROCESS_BYTES = 512 * 2**20
_PROBED = 16  # headers read to estimate a job's size


def planned_workers(pairs: Sequence[Pair], workers: int | None, dask_address: str | None) -> int:
    """The worker processes for `pairs`: `workers` when given (or a cluster's address), else 1
    for a job under :data:`IN_PROCESS_BYTES` (estimated from the headers of its first pairs),
    else one per CPU core."""
    if workers is not None or dask_address:
        return workers or default_workers()
    sizes = []
    for pair in pairs[:_PROBED]:
        try:
            info = probe_image(pair.image)
        except InputError:
            continue  # rejected later, with its reason
        sizes.append(info.decoded_bytes + info.pixels)  # the image and its uint8 mask
    estimate = sum(sizes) / max(1, len(sizes)) * len(pairs)
    return 1 if estimate < IN_PROCESS_BYTES else default_workers()


def write_samples(
    pairs: Sequence[Pair],
    store: str | Path,
    *,
    rules: MaskRules,
    checks: SampleChecks,
    stored: Mapping[str, StoredSample],
    workers: int | None,
    dask_address: str | None,
    log: Callable[[str], None] = _log.info,
) -> Iterator[PairOutcome]:
    """Ingest every pair (:func:`~segflow.tasks.ingest.samples.ingest_pair`), yielding each
    outcome as it finishes, in completion order.

    Parameters
    ----------
    checks
        Size limits and the store's image format
        (:func:`~segflow.tasks.ingest.samples.sample_checks`).
    stored
        What the store already holds (from :func:`prepare_store`): unchanged pairs are skipped.
    workers
        Dask worker processes, ``None`` to choose (:func:`planned_workers`); with 1 and no
        `dask_address` the pairs are ingested in this process, one after the other.
    dask_address
        Scheduler of an existing cluster; ``None`` starts a LocalCluster of `workers`.
    log
        Receives the Dask dashboard address.

    Raises
    ------
    SampleWriteError
        A pair raised an ``OSError`` (after it, no further pair is started).
    Exception
        Whatever else a pair raises beyond bad input (bad input is a ``rejected`` outcome).
    """
    workers = planned_workers(pairs, workers, dask_address)
    options = {"store": store, "rules": rules, "checks": checks, "workers": workers}
    done: list[PairOutcome] = []
    if workers == 1 and not dask_address:
        for pair in pairs:
            try:
                done.append(ingest_pair(pair, stored=stored.get(pair.sample_id), **options))
            except OSError as exc:
                raise SampleWriteError(store, pair, exc, done) from exc
            yield done[-1]
        return
    with dask_client(dask_address, workers=workers) as client:
        log(f"Dask dashboard: {client.dashboard_link}")
        previous = [stored.get(pair.sample_id) for pair in pairs]
        futures = client.map(ingest_pair_with, pairs, previous, options=options, pure=False)
        pair_of = {future.key: pair for future, pair in zip(futures, pairs, strict=True)}
        for future in as_completed(futures):
            try:
                done.append(future.result())
            except OSError as exc:
                # Pairs not started yet are dropped; a LocalCluster's running ones end with it.
                client.cancel(futures)
                raise SampleWriteError(store, pair_of[future.key], exc, done) from exc
            yield done[-1]
