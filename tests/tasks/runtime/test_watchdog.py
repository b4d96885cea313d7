"""After kill -9 of a command, its watchdog ends everything the command started."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from segflow.tasks.runtime.watchdog import MARK, end_marked, marked_processes

# A command that starts its watchdog, then a child, a grandchild and a child in a session of
# its own (as a server might), and reports their PIDs.
COMMAND = textwrap.dedent(
    """
    import subprocess, sys, time
    from segflow.tasks.runtime.watchdog import start_watchdog
    start_watchdog()
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    nested = [sys.executable, "-c", f"import subprocess, time; subprocess.Popen({sleeper!r}); "
              "time.sleep(120)"]
    children = [subprocess.Popen(nested), subprocess.Popen(sleeper, start_new_session=True)]
    print(" ".join(str(c.pid) for c in children), flush=True)
    time.sleep(120)
    """
)


def _family(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_kill_9_of_the_command_ends_all_it_started(tmp_path):
    script = tmp_path / "command.py"
    script.write_text(COMMAND)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    nested, _ = map(int, proc.stdout.readline().split())
    deadline = time.monotonic() + 30
    while not _family(nested) and time.monotonic() < deadline:  # the grandchild
        time.sleep(0.05)
    started = _family(proc.pid)
    assert len(started) >= 3  # two children, one grandchild (and the watchdog)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(started, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


def test_only_processes_with_the_token_are_ended():
    env = {**os.environ, MARK: "1-ours"}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(sleeper, env=env)
    other = subprocess.Popen(sleeper, env={**os.environ, MARK: "1-other"})
    try:
        deadline = time.monotonic() + 10
        while not marked_processes("1-ours") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert end_marked("1-ours", grace=5) == 1
        ours.wait(5)  # ended (end_marked may have reaped it: its code is lost)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
