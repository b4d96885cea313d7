"""What a real ``segflow ingest`` starts: loopback listeners only, and no orphan after kill -9."""

from __future__ import annotations

import ipaddress
import time

import psutil
import pytest

from tests.crash.commands import command_line, family, kill_when, left_running, start
from tests.images import make_source

# The real command, run several times (~20 s each here): `.ci/run` runs these tests.
pytestmark = pytest.mark.slow


def _listening(processes: list[psutil.Process]) -> dict[tuple[int, str, int], str]:
    """(pid, ip, port) -> command of every listening TCP socket of `processes`."""
    found = {}
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found[(process.pid, conn.laddr.ip, conn.laddr.port)] = command_line(process)
        except psutil.Error:  # ended meanwhile
            continue
    return found


def test_everything_segflow_starts_listens_on_loopback_only(tmp_path, home):
    source = make_source(tmp_path / "src", n=30, size=(256, 256))
    proc = start(["ingest", source, tmp_path / "ds.zarr", "--workers", "2"], home, tmp_path / "log")
    listeners = {}
    while proc.poll() is None:
        listeners |= _listening(family(proc))
        time.sleep(0.05)
    assert proc.returncode == 0, (tmp_path / "log").read_text()
    commands = " ".join(listeners.values())
    # the Prefect server, the command itself (scheduler, dashboard), two nannies, two workers
    assert "uvicorn" in commands and len({pid for pid, _, _ in listeners}) >= 4, listeners
    exposed = {k: v for k, v in listeners.items() if not ipaddress.ip_address(k[1]).is_loopback}
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_nothing_is_left_running_after_kill_9(tmp_path, home):
    source = make_source(tmp_path / "src", n=60, size=(512, 512))
    store = tmp_path / "ds.zarr"
    proc = start(["ingest", source, store, "--workers", "2"], home, tmp_path / "log")
    # Dask workers at work and Prefect's server up: everything the command starts is running.
    started = kill_when(proc, lambda: any((store / "masks").glob("s*")))
    commands = " ".join(map(command_line, started))
    assert "uvicorn" in commands and "multiprocessing" in commands, commands
    left = left_running(started)
    assert not left, f"left running after kill -9: {left}"
