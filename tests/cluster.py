"""An external Dask cluster for the tests: ``dask scheduler`` and ``dask worker`` processes on
127.0.0.1, as a user starts them by hand, each worker in its own fresh working directory.

Registered for every test by ``tests/conftest.py`` (``pytest_plugins``); a test asks for the
``dask_cluster`` fixture and calls it::

    cluster = dask_cluster([], ["--resources", "GPU=1"])  # two workers, the second a "GPU" one
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from dask.distributed import Client

from tests.servers import free_port

DASK = Path(sys.executable).with_name("dask")  # the console script of this environment


@dataclass(frozen=True)
class ExternalCluster:
    """A running scheduler at `address` and its workers, worker i started in `folders[i]`."""

    address: str
    folders: tuple[Path, ...]


def worker_command(address: str, folder: Path, extra: Sequence[str]) -> list[str]:
    """``dask worker`` of one single-threaded process; `extra` comes last, so it overrides
    the defaults (``--nthreads 2``) or adds to them (``--resources GPU=1``)."""
    return [
        str(DASK),
        "worker",
        address,
        "--nthreads",
        "1",
        "--nworkers",
        "1",
        "--memory-limit",
        "2GiB",
        "--local-directory",
        str(folder / "dask-scratch"),
        "--host",
        "127.0.0.1",
        "--dashboard-address",
        "127.0.0.1:0",
        "--death-timeout",
        "60",  # a worker whose scheduler is gone exits by itself
        *extra,
    ]


@contextmanager
def external_cluster(
    root: Path, workers: Sequence[Sequence[str]], *, timeout: float = 120
) -> Iterator[ExternalCluster]:
    """Start a scheduler and one ``dask worker`` per entry of `workers` (its extra arguments),
    wait until a client sees them all, and end every process on exit, the test failed or not.

    Each process runs in its own folder under `root` (its working directory), where its
    output goes to ``log.txt``; a process that exits early fails the start with that log.
    """
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes: list[tuple[subprocess.Popen, Path]] = []

    def start(command: list[str], folder: Path) -> subprocess.Popen:
        folder.mkdir(parents=True)
        with (folder / "log.txt").open("wb") as log:
            process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        processes.append((process, folder))
        return process

    def check_running() -> None:
        for process, folder in processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{process.args[:2]} exited with {process.returncode}:\n"
                    + (folder / "log.txt").read_text()[-3000:]
                )

    try:
        scheduler = start(
            [
                str(DASK),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            root / "scheduler",
        )
        deadline = time.monotonic() + timeout
        while not _listening(port):
            check_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{scheduler.args[:2]}: not listening within {timeout} s")
            time.sleep(0.1)
        folders = tuple(root / f"worker-{i}" for i in range(len(workers)))
        for folder, extra in zip(folders, workers, strict=True):
            start(worker_command(address, folder, extra), folder)
        with Client(address, timeout=timeout) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < len(workers):
                check_running()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(workers)} workers not up within {timeout} s")
                time.sleep(0.1)
        yield ExternalCluster(address, folders)
    finally:
        _end([process for process, _ in processes])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _end(processes: list[subprocess.Popen], grace: float = 10) -> None:
    """Terminate `processes` and the processes they started (a nanny's worker, its resource
    tracker), all at once, then kill what is left after `grace` seconds."""
    family: list[psutil.Process] = []
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            top = psutil.Process(process.pid)
            family += [top, *top.children(recursive=True)]
    for member in family:
        with suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=grace)
    for member in alive:
        with suppress(psutil.NoSuchProcess):
            member.kill()
    for process in processes:
        process.wait()  # reap it


@pytest.fixture
def dask_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ExternalCluster]]:
    """Start an :class:`ExternalCluster`: ``dask_cluster(*workers)`` with one list of extra
    ``dask worker`` arguments per worker; every cluster started ends with the test."""
    with ExitStack() as stack:

        def start(*workers: Sequence[str]) -> ExternalCluster:
            root = tmp_path_factory.mktemp("dask-cluster")
            return stack.enter_context(external_cluster(root, workers))

        yield start
