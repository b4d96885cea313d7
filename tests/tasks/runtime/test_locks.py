"""One writer at a time: the folder lock, its release on kill -9, and the commands that hold it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from segflow.tasks.runtime import locks
from segflow.tasks.runtime.locks import LockHeld, hold, holds
from tests.images import make_source, make_store

SEGFLOW = Path(sys.executable).with_name("segflow")

HOLDER = textwrap.dedent(
    """
    import sys, time
    from segflow.tasks.runtime.locks import hold
    with hold(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def start_holder(folder: Path, seconds: float = 60) -> subprocess.Popen:
    """A process that holds `folder`'s lock for `seconds` (returns once it holds it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def holder(tmp_path):
    process = start_holder(tmp_path / "store.zarr")
    yield process
    process.kill()
    process.wait()


def test_second_writer_fails_at_once_naming_the_holder(tmp_path, holder):
    started = time.monotonic()
    with pytest.raises(LockHeld) as caught, hold(tmp_path / "store.zarr"):
        pass
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert f"PID {holder.pid} (" in message and "-c" in message
    assert str(tmp_path / "store.zarr") in message and "\n" not in message
    assert caught.value.holder["pid"] == holder.pid


def test_lock_is_released_when_the_holder_is_killed(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with hold(tmp_path / "store.zarr") as path:
        assert holds(tmp_path / "store.zarr")
        assert f'"pid": {os.getpid()}' in path.read_text()
    assert not holds(tmp_path / "store.zarr")
    assert path.read_text() == ""  # a clean release leaves no stale record


def test_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path):
    start_holder(tmp_path / "run", seconds=0.5)
    with hold(tmp_path / "run", wait=20):
        assert holds(tmp_path / "run")


def test_lock_is_reentrant_within_a_process(tmp_path):
    with hold(tmp_path / "run"), hold(tmp_path / "run"):
        pass
    with hold(tmp_path / "run"):  # released by the outer block, not the inner one
        pass
    assert not locks._held


# Each command with the folder it writes: exits 1 at once, before Prefect starts a server.
COMMANDS = {
    "ingest": (["ingest", "{tmp}/src", "{tmp}/store.zarr"], "store.zarr"),
    "infer": (
        ["infer", "{tmp}/src/images", "{tmp}/predictions.zarr", "--model", "{tmp}/src"],
        "predictions.zarr",
    ),
    "train": (["train", "{tmp}/ds.zarr", "--workdir", "{tmp}/work"], "work/training/unet"),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_command_on_a_locked_folder_exits_1_naming_the_holder(tmp_path, command):
    args, locked = COMMANDS[command]
    make_store(tmp_path, count=4, size=32)  # valid inputs: the CLI checks them before the lock
    env = os.environ | {"SEGFLOW_HOME": str(tmp_path / ".segflow")}
    with hold(tmp_path / locked):
        started = time.monotonic()
        done = subprocess.run(
            [str(SEGFLOW), *(a.format(tmp=tmp_path) for a in args)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == "", done.stderr
    assert f"PID {os.getpid()} (" in done.stderr and "being written" in done.stderr
    assert time.monotonic() - started < 30  # no Prefect server was started


def _flow_and_config(command: str, tmp: Path):
    from segflow.flows.config import InferConfig, IngestConfig, TrainConfig
    from segflow.flows.infer import infer_images
    from segflow.flows.ingest import ingest_dataset
    from segflow.flows.train import train_unet

    src, out = str(tmp / "src"), str(tmp / "out.zarr")
    if command == "ingest":
        return ingest_dataset, IngestConfig(source=src, store=out), tmp / "out.zarr"
    if command == "infer":
        return infer_images, InferConfig(input=src, output=out), tmp / "out.zarr"
    config = TrainConfig(store=out, workdir=str(tmp / "work"), run_name="r1")
    return train_unet, config, tmp / "work" / "training" / "r1"


@pytest.mark.parametrize("command", COMMANDS)
def test_flow_itself_takes_the_lock(tmp_path, command):
    """Deployments run the flows without the CLI: each flow takes its lock before any task
    that writes (ingest reads its source and split first: a bad split creates nothing)."""
    make_source(tmp_path / "src", n=2)
    flow, config, locked = _flow_and_config(command, tmp_path)
    holder = start_holder(locked)
    try:
        with pytest.raises(LockHeld, match=f"PID {holder.pid} "):
            flow.fn(config)
    finally:
        holder.kill()
        holder.wait()
