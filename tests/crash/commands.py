"""The real ``segflow`` console script in a subprocess, killed with SIGKILL at chosen moments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

SEGFLOW = Path(sys.executable).with_name("segflow")


def start(args: list[str], home: Path, log: Path) -> subprocess.Popen:
    """Start ``segflow *args`` with its Prefect home under `home`; output goes to `log`."""
    env = {**os.environ, "SEGFLOW_HOME": str(home)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(SEGFLOW), *map(str, args)], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def run(args: list[str], home: Path, log: Path, timeout: float = 300) -> None:
    """Run ``segflow *args`` to the end; fail with its output unless it exits 0."""
    proc = start(args, home, log)
    try:
        code = proc.wait(timeout)
    finally:
        proc.kill()
    assert code == 0, f"segflow {' '.join(map(str, args))} exited {code}:\n{log.read_text()}"


def family(proc: subprocess.Popen) -> list[psutil.Process]:
    """`proc` and every process below it now."""
    try:
        parent = psutil.Process(proc.pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_when(
    proc: subprocess.Popen,
    ready: Callable[[], bool],
    *,
    delay: float = 0.0,
    timeout: float = 240,
) -> list[psutil.Process]:
    """SIGKILL `proc` `delay` seconds after `ready()` first holds; return its descendants then.

    Fails when `proc` ends by itself first: the moment to test was missed.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"exited ({proc.returncode}) before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill it never came"
        time.sleep(0.01)
    time.sleep(delay)
    started = family(proc)[1:]
    assert proc.poll() is None, f"exited ({proc.returncode}) before the moment to kill it"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return started


def left_running(processes: list[psutil.Process], timeout: float = 15) -> list[str]:
    """The command lines of `processes` still running after `timeout` seconds."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [command_line(p) for p in alive if _running(p)]


def command_line(process: psutil.Process) -> str:
    """Its command line, or "" when it has ended (a zombie has none)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
