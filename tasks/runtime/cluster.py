"""Dask clusters: a LocalCluster sized to the machine by default, or any existing cluster.

An existing cluster (``dask scheduler`` and ``dask worker`` processes, dask-cuda's
``dask cuda worker``) runs segflow's functions in its workers' own processes and working
directories: they import segflow from their environment and must reach the data by URL or by
the same absolute paths as the client.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import dask
from dask.distributed import Client, LocalCluster, WorkerPlugin, as_completed

from segflow.tasks.storage.urls import given_options, use_options

T = TypeVar("T")

# Where a LocalCluster's scheduler, nannies, workers and dashboard listen: nothing segflow starts
# by default is reachable from another machine (":0" would bind the dashboard to every interface).
LOOPBACK = "127.0.0.1"


def default_workers() -> int:
    """One worker per CPU core."""
    return os.cpu_count() or 1


class StorageOptions(WorkerPlugin):
    """Gives every worker, those that join later included, the run's storage options."""

    name = "segflow-storage-options"

    def __init__(self, options: dict) -> None:
        self.options = options

    def setup(self, worker) -> None:
        use_options(self.options)


def _with_options(client: Client) -> Client:
    """`client`, its workers given this process's storage options (when there are any)."""
    if options := given_options():
        client.register_plugin(StorageOptions(options))
    return client


@contextmanager
def dask_client(address: str | None = None, *, workers: int | None = None) -> Iterator[Client]:
    """A client of the cluster at `address`, or of a new LocalCluster of `workers` processes
    listening on loopback only.

    Local workers get one thread each (the libraries inside use their own threads) and keep
    glibc's default malloc tuning: Dask's ``MALLOC_TRIM_THRESHOLD_`` also freezes the mmap
    threshold, so every image-sized array is mmapped and page-faulted afresh; measured on
    ingest it made a worker 1.6x slower (benchmarks/README.md).
    """
    if address:
        with Client(address) as client:
            yield _with_options(client)
        return
    settings = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the in-process scheduler's INFO lines drown the run log
    try:
        with (
            dask.config.set(settings),
            LocalCluster(
                n_workers=workers or default_workers(),
                threads_per_worker=1,
                processes=True,
                host=LOOPBACK,
                dashboard_address=f"{LOOPBACK}:0",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield _with_options(client)
    finally:  # after the cluster's close, whose INFO lines are as noisy
        quiet.setLevel(level)


def advertised_resources(client: Client) -> set[str]:
    """The names of the resources (``GPU``...) that at least one worker of the cluster offers,
    as given by ``dask worker --resources "GPU=1"``; empty for segflow's LocalCluster."""
    # n_workers=-1: some releases of distributed list only the first 5 workers by default
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return {
        name
        for worker in workers
        for name, amount in (worker.get("resources") or {}).items()
        if amount > 0
    }


def map_unordered(
    function: Callable[..., T],
    arguments: Sequence[tuple],
    *,
    workers: int,
    dask_address: str | None = None,
    log: Callable[[str], None] = print,
) -> Iterator[tuple[tuple, T]]:
    """Yield ``(args, function(*args))`` for every tuple in `arguments`, as they finish.

    In this process when one local worker is asked for (no cluster start-up cost), else on a
    LocalCluster of `workers` processes or the cluster at `dask_address`. A failing call raises.
    """
    if workers == 1 and not dask_address:
        for args in arguments:
            yield args, function(*args)
        return
    with dask_client(dask_address, workers=workers) as client:
        log(f"Dask dashboard: {client.dashboard_link}")
        futures = {client.submit(function, *args, pure=False): args for args in arguments}
        for future in as_completed(futures):
            yield futures[future], future.result()
