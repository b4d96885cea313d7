"""The real ``segflow train --nproc 2``: its helper rank killed with SIGKILL, the command ends
in bounded time naming the rank, leaves no process behind, and ``--resume`` completes; and the
same training started by torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from tests.crash.commands import family, left_running, run, start
from tests.images import make_store

# Two runs of the real command with Prefect's temporary server (~25 s each here).
pytestmark = pytest.mark.slow

TINY = ["--epochs", "12", "--patches-per-epoch", "16", "--patch-size", "32", "--batch-size", "4",
        "--base-channels", "4", "--depth", "2", "--val-max-tiles", "4", "--num-workers", "0",
        "--patience", "0", "--nproc", "2"]  # fmt: skip


def test_killed_rank_ends_the_command_and_resume_completes(tmp_path):
    store = make_store(tmp_path, count=6, size=64)
    home, work = tmp_path / "home", tmp_path / "work"
    command = ["train", store, "--workdir", work, *TINY]
    last = work / "training" / "unet" / "member_0" / "last.pt"
    proc = start(command, home, tmp_path / "killed.log")
    waited = time.monotonic() + 240
    while not last.exists():
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()
        assert time.monotonic() < waited, "no checkpoint came"
        time.sleep(0.05)
    started = family(proc)[1:]
    (helper,) = [p for p in started if "distributed_launch" in " ".join(p.cmdline())]
    helper.kill()
    killed = time.monotonic()
    assert proc.wait(60) == 1
    assert time.monotonic() - killed < 60
    output = (tmp_path / "killed.log").read_text()
    assert "error: training rank 1 of 2 died (SIGKILL)" in output, output
    assert "Traceback" not in output  # a dead rank is reported in one line
    assert not left_running(started)
    done = torch.load(last, weights_only=True)["epoch"]
    assert done < 11

    run([*command, "--resume"], home, tmp_path / "resumed.log")
    assert torch.load(last, weights_only=True)["epoch"] == 11
    resumed = (tmp_path / "resumed.log").read_text()
    assert f"member 0 epoch {done + 2}/12:" in resumed and "member 0 epoch 1/12:" not in resumed


def test_torchrun_trains_on_two_ranks_and_registers_the_model(tmp_path):
    store = make_store(tmp_path, count=6, size=64)
    work, log = tmp_path / "work", tmp_path / "torchrun.log"
    options = [*TINY[:-2], "--epochs", "2"]  # torchrun sets the ranks, not --nproc
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "-m", "segflow.flows.train", store, "--workdir", work, *options]  # fmt: skip
    env = {**os.environ, "SEGFLOW_HOME": str(tmp_path / "home")}
    with log.open("w") as out:
        done = subprocess.run(list(map(str, command)), env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=300)  # fmt: skip
    output = log.read_text()
    assert done.returncode == 0, output
    assert "models:/segflow-unet/1" in output, output
    assert (
        torch.load(work / "training" / "unet" / "member_0" / "last.pt", weights_only=True)["epoch"]
        == 1
    )
