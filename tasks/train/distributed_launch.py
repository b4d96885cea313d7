"""Starting the ranks of a data-parallel run and handing them their work.

``segflow train --nproc N`` trains in its own process as rank 0 and starts ``N - 1`` helper
ranks on this machine (``python -m segflow.tasks.train.distributed_launch BACKEND``, with
torchrun's environment variables); under torchrun, torchrun starts every rank and each joins
the group itself (:func:`join_group`). Either way rank 0 sends each piece of work (a picklable
callable: one ensemble member's training) to the other ranks, which run what they receive
until rank 0 sends None (:func:`serve`).

A rank that dies breaks its connections: the others fail at their next collective (gloo: at
once; NCCL: at the collective timeout, :data:`TIMEOUT`, unless torchrun's agent ends them
first), and rank 0 says which rank died and how (:class:`RankFailed`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import IO

import torch
import torch.distributed as dist

from segflow.tasks.runtime.device import DeviceName, resolve_device
from segflow.tasks.train.distributed import current_ranks, share

# A collective that waits longer fails (a hung rank). Ranks wait for rank 0 while it validates,
# logs to MLflow and, under torchrun, balances classes and registers the model: keep it long.
TIMEOUT = timedelta(minutes=30)
HOST = "127.0.0.1"  # helpers started by `segflow train --nproc` run on this machine


class RankFailed(RuntimeError):
    """A rank of a data-parallel run died or failed; the checkpoints stop at its last epoch."""


def backend(device: DeviceName) -> str:
    """The process-group backend for training on `device`: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if resolve_device(device).type == "cuda" else "gloo"


def _use_local_gpu(name: str) -> None:
    """With NCCL, make ``cuda:<LOCAL_RANK>`` the current device before the first collective:
    NCCL sends even the objects rank 0 shares through it."""
    if name == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def join_group(name: str) -> None:
    """Join the process group that torchrun's environment variables describe (``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with backend `name`."""
    _use_local_gpu(name)
    dist.init_process_group(name, init_method="env://", timeout=TIMEOUT)


def leave_group(failed: bool = False) -> None:
    """Leave the process group, if this process is in one; after a failure (`failed`), a gloo
    group is left but never freed (:func:`_never_free`)."""
    if not dist.is_initialized():
        return
    if failed and dist.get_backend() == "gloo":
        _never_free(dist.group.WORLD)
    dist.destroy_process_group()


def _never_free(group: dist.ProcessGroup) -> None:
    """Keep the gloo `group` of a failed run alive until the process ends.

    After a failure, freeing the last reference to the group (held by DistributedDataParallel
    in the error's traceback) runs gloo's destructor, which joins its worker threads while
    holding the GIL; a worker still freeing a collective's tensors waits for the GIL, and the
    process hangs for good (the killed-rank test: 2 hangs in 14 runs, 0 in 50 with this).
    torch 2.13's gloo backend has no shutdown or abort that stops those threads first, so the
    group keeps one reference the interpreter never gives back: each failed run leaves its two
    worker threads, connections and store port behind.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(group))


def serve() -> None:
    """Run the work rank 0 sends until it sends None (every rank but 0)."""
    ranks = current_ranks()
    while (job := share(None, ranks)) is not None:
        job()


def release() -> None:
    """Send None to the ranks in :func:`serve`: they return (rank 0)."""
    share(None, current_ranks())


@contextmanager
def spread(nproc: int, device: DeviceName, job: Callable[[], object]) -> Iterator[None]:
    """Run `job` on the other ranks while the caller trains as rank 0.

    In a process group already (torchrun), `job` goes to the ranks waiting in :func:`serve`;
    with `nproc` 1 nothing happens (one process, no group); else ``nproc - 1`` helpers start
    on this machine, run `job`, and end with the block.

    Raises
    ------
    RankFailed
        A helper died or failed (the block's error is its cause).
    ValueError
        More ranks than GPUs on CUDA.
    """
    if dist.is_initialized():
        share(job, current_ranks())
        yield
    elif nproc == 1:
        yield
    else:
        with _helpers(nproc, backend(device)):
            share(job, current_ranks())
            yield
            release()


def _threads(nproc: int, name: str) -> int:
    """Threads per rank: the CPU's cores shared out (gloo), or torch's choice (NCCL)."""
    if name == "nccl":
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) // nproc)


def _start(rank: int, nproc: int, port: int, name: str, log: IO[bytes]) -> subprocess.Popen:
    """Helper rank `rank` of `nproc`, its stderr to `log`, to reach rank 0's store at `port`."""
    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc)}
    env |= {"LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": HOST, "MASTER_PORT": str(port)}
    env["OMP_NUM_THREADS"] = str(_threads(nproc, name))
    # Helpers unpickle the work rank 0 sends: they import from where this process does.
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    command = [sys.executable, "-m", __name__, name]
    return subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log
    )


def _joined(store: dist.TCPStore, helpers: list[subprocess.Popen]) -> None:
    """Wait until every helper has reached the store, failing at once if one ends first."""
    keys = [f"joined/{rank}" for rank in range(1, len(helpers) + 1)]
    waited = time.monotonic() + TIMEOUT.total_seconds()
    while not store.check(keys):
        if any(helper.poll() is not None for helper in helpers):
            raise RuntimeError("a helper rank ended before joining the group")
        if time.monotonic() > waited:
            raise TimeoutError(f"helper ranks did not start within {TIMEOUT}")
        time.sleep(0.05)


@contextmanager
def _helpers(nproc: int, name: str) -> Iterator[None]:
    """Start ``nproc - 1`` helper ranks and join their group as rank 0, for the block."""
    if name == "nccl" and nproc > torch.cuda.device_count():
        raise ValueError(f"nproc {nproc} is more than the {torch.cuda.device_count()} GPUs")
    store = dist.TCPStore(HOST, 0, nproc, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
    threads = torch.get_num_threads()
    with ExitStack() as files:
        logs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(1, nproc)]
        helpers = [_start(r, nproc, store.port, name, logs[r - 1]) for r in range(1, nproc)]
        try:
            torch.set_num_threads(_threads(nproc, name))
            _joined(store, helpers)
            dist.init_process_group(name, store=store, rank=0, world_size=nproc, timeout=TIMEOUT)
            yield
            for helper in helpers:
                helper.wait(TIMEOUT.total_seconds())
        except BaseException as exc:  # KeyboardInterrupt included: it fails the group too
            leave_group(failed=True)
            if failure := _failure(helpers, logs):
                raise RankFailed(failure) from exc
            raise
        finally:
            torch.set_num_threads(threads)
            for helper in helpers:
                if helper.poll() is None:
                    helper.kill()
                    helper.wait()
            leave_group()


def _failure(helpers: list[subprocess.Popen], logs: list[IO[bytes]]) -> str | None:
    """One line on the first helper that died or failed (given a few seconds to end), or
    None when all still run or ended well."""
    settled = time.monotonic() + 5
    while time.monotonic() < settled and any(h.poll() is None for h in helpers):
        time.sleep(0.05)
    world = len(helpers) + 1
    for rank, (helper, log) in enumerate(zip(helpers, logs, strict=True), start=1):
        code = helper.poll()
        if code is None or code == 0:
            continue
        if code < 0:
            how = f"died ({signal.Signals(-code).name})"
        else:
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
            how = f"failed (exit status {code}{': ' + lines[-1] if lines else ''})"
        return (
            f"training rank {rank} of {world} {how}; the checkpoints keep the last finished "
            "epoch: rerun with --resume to continue"
        )
    return None


def main(argv: list[str]) -> int:
    """A helper rank started by :func:`spread`: join the group (backend ``argv[0]``), run the
    work rank 0 sends; one line on stderr and status 1 on failure."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        port = int(os.environ["MASTER_PORT"])
        store = dist.TCPStore(HOST, port, world, is_master=False, timeout=TIMEOUT)
        store.set(f"joined/{rank}", "1")
        _use_local_gpu(argv[0])
        dist.init_process_group(argv[0], store=store, rank=rank, world_size=world, timeout=TIMEOUT)
        serve()
    except Exception as exc:
        leave_group(failed=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"rank {rank}: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    leave_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
