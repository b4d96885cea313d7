"""One writer at a time per folder: an OS lock on ``.FOLDER.segflow.lock`` beside it.

The lock is ``fcntl.flock`` on a hidden file next to the folder (not inside it: a Zarr store
holds nothing but Zarr, and a run folder can be emptied without touching the lock), so the
kernel releases it when the holding process ends in any way, ``kill -9`` included; nothing
stale is ever left to clean up.
After acquiring, the holder writes its PID, command line and start time into the file, so a
second writer can name it.

The lock is re-entrant within one process: the CLI takes it before the flow starts (to exit at
once, before Prefect's server starts), and the flow takes it again for deployments that run it
without the CLI. It therefore excludes other processes, not other threads. Processes forked
while it is held (DataLoader workers) share it until they exit; spawned ones (Dask workers,
Prefect's server) do not inherit it.

A store on object storage (a URL) has no folder beside it to hold a lock file: its lock file is
kept in this machine's temporary folder, named after the URL, so it excludes the writers of one
machine only (README, "Object storage").
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from segflow.tasks.storage.urls import is_remote

LOCK_SUFFIX = ".segflow.lock"


def lock_path(folder: str | Path) -> Path:
    """The lock file of `folder`: ``.<name>.segflow.lock`` in its parent; for a URL, a file
    named after it in this machine's temporary folder."""
    if is_remote(folder):
        locks = Path(tempfile.gettempdir()) / "segflow-locks"
        locks.mkdir(exist_ok=True)
        return locks / f".{quote(str(folder).rstrip('/'), safe='')}{LOCK_SUFFIX}"
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


_POLL_SECONDS = 0.1

# Lock file -> [descriptor, depth] of the locks this process holds (for re-entry).
_held: dict[Path, list[int]] = {}
_registry = threading.Lock()


class LockHeld(RuntimeError):
    """Another process holds the writer lock of `folder`; `holder` is what it recorded."""

    def __init__(self, folder: Path, holder: dict[str, Any]) -> None:
        who = (
            f"PID {holder['pid']} ({holder.get('command', '?')}), since {holder.get('started')}"
            if "pid" in holder
            else "a process that has not recorded itself yet"
        )
        super().__init__(
            f"{folder} is being written by another segflow process: {who}; "
            "wait for it to finish or stop it"
        )
        self.folder, self.holder = folder, holder


def _read_holder(fd: int) -> dict[str, Any]:
    # The holder writes its record right after acquiring: give it a moment if it is empty.
    for _ in range(5):
        text = os.pread(fd, 65536, 0).decode(errors="replace").strip()
        if text:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return {"record": text}
        time.sleep(_POLL_SECONDS)
    return {}


def _acquire(fd: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)


def _record(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "command": shlex.join(sys.argv),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


@contextmanager
def hold(folder: str | Path, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the writer lock of `folder` (a local folder, created if missing, or a URL) for the
    ``with`` block.

    Parameters
    ----------
    wait
        Seconds to wait for another holder to finish; 0 fails at once.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    LockHeld
        Another process holds the lock (after `wait` seconds); names its PID and command.
    """
    if not is_remote(folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    with _registry:
        entry = _held.get(path)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _acquire(fd, wait):
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(folder, holder)
        _record(fd)
        with _registry:
            entry = _held[path] = [fd, 1]
    try:
        yield path
    finally:
        with _registry:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[path]
        if last:
            os.ftruncate(entry[0], 0)  # no stale record for a reader of the file
            os.close(entry[0])  # closing the only descriptor releases the lock


def holds(folder: str | Path) -> bool:
    """Whether this process holds the writer lock of `folder`."""
    with _registry:
        return lock_path(folder) in _held
