"""No orphans: what a segflow command started ends with it, even after ``kill -9``.

A command marks its environment with a token that every process it starts inherits (Dask
nannies and workers, Prefect's temporary server, multiprocessing helpers), and starts a watchdog
in a session of its own. The watchdog waits for its parent to die (it is reparented then, so PID
reuse cannot fool it), and ends every process that still carries the token: SIGTERM, then
SIGKILL after a grace period. Ctrl-C reaches the command's process group as before; the watchdog,
in its own session, only sweeps what is left once the command has gone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time

import psutil

MARK = "SEGFLOW_RUN_MARK"  # environment variable naming the command that started a process
POLL_SECONDS = 0.2
GRACE_SECONDS = 3.0


def start_watchdog() -> int | None:
    """Mark this process's environment and start its watchdog, once per process.

    Returns the watchdog's PID, or ``None`` when this process already has one.
    """
    parent = os.getpid()
    if os.environ.get(MARK, "").startswith(f"{parent}-"):
        return None
    token = f"{parent}-{secrets.token_hex(8)}"
    os.environ[MARK] = token
    env = {key: value for key, value in os.environ.items() if key != MARK}
    # Its own session: Ctrl-C in the terminal does not stop it before it has swept. No inherited
    # stdout/stderr: a caller reading the command's output would otherwise wait for it.
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    argv = [sys.executable, "-m", __name__, str(parent), token]
    return os.posix_spawn(sys.executable, argv, env, setsid=True, file_actions=quiet)


def marked_processes(token: str) -> list[psutil.Process]:
    """The live processes whose environment holds ``MARK=token`` (this one excluded)."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(MARK) == token:
                found.append(process)
        except psutil.Error:  # gone meanwhile, a zombie, or not ours to read
            continue
    return found


def end_marked(token: str, *, grace: float = GRACE_SECONDS, rounds: int = 5) -> int:
    """End every process marked with `token`; return how many were signalled.

    SIGTERM first, so servers close their files; SIGKILL for those still alive after `grace`
    seconds. Repeated while marked processes remain (a Dask nanny may restart its worker).
    """
    ended = 0
    for _ in range(rounds):
        processes = marked_processes(token)
        if not processes:
            break
        for process in processes:
            _signal(process, psutil.Process.terminate)
        _, alive = psutil.wait_procs(processes, timeout=grace)
        for process in alive:
            _signal(process, psutil.Process.kill)
        psutil.wait_procs(alive, timeout=grace)
        ended += len(processes)
    return ended


def _signal(process: psutil.Process, send) -> None:
    """Send via psutil, which checks the PID still names the process it was found as."""
    with contextlib.suppress(psutil.Error):  # gone, or its PID now names another process
        send(process)


def watch(parent: int, token: str) -> None:
    """Wait until `parent` dies, then end what it started."""
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    end_marked(token)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
