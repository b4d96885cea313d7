"""``segflow train`` with its DataLoader worker, killed with SIGKILL at seeded moments, then
``--resume``: the final weights equal those of an uninterrupted run, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.crash.commands import kill_when, left_running, run, start
from tests.images import make_store

# The real command, run several times (~20 s each here): `.ci/run` runs these tests.
pytestmark = pytest.mark.slow

EPOCHS = 6
# A tiny model and short epochs: each epoch takes a fraction of a second; the DataLoader keeps
# its default worker process.
TINY = ["--epochs", EPOCHS, "--patches-per-epoch", "16", "--patch-size", "64", "--batch-size",
        "4", "--base-channels", "4", "--depth", "2", "--val-max-tiles", "4"]  # fmt: skip


def _train(store: Path, workdir: Path, name: str, *extra) -> list:
    return ["train", store, "--workdir", workdir, "--run-name", name, *TINY, *extra]


def _last(workdir: Path, name: str) -> Path:
    return workdir / "training" / name / "member_0/last.pt"


def _epochs_done(workdir: Path, name: str) -> int:
    """Epochs in the last checkpoint (written atomically, so never read half-written)."""
    path = _last(workdir, name)
    return torch.load(path, weights_only=False)["epoch"] + 1 if path.exists() else 0


def kill_and_resume(tmp_path, home, seed: int, kills: int) -> None:
    store = make_store(tmp_path, count=8, size=64)
    work = tmp_path / "work"  # one MLflow database for both runs: created once
    run(_train(store, work, "straight"), home, tmp_path / "straight.log")
    rng = np.random.default_rng(seed)
    previous = 0
    for attempt in range(kills):
        # a moment: k epochs checkpointed (0: before or during the first epoch), then a bit more
        done, delay = int(rng.integers(0, EPOCHS - 2)), float(rng.uniform(0, 0.3))
        command = _train(store, work, "crashed", "--resume")
        proc = start(command, home, tmp_path / f"kill{attempt}.log")
        started = kill_when(proc, lambda k=done: _epochs_done(work, "crashed") >= k, delay=delay)
        assert not left_running(started)
        # killed before the end, and never behind the previous attempt: each one resumed
        assert previous <= _epochs_done(work, "crashed") < EPOCHS
        previous = _epochs_done(work, "crashed")
    run(_train(store, work, "crashed", "--resume"), home, tmp_path / "resume.log")
    want = torch.load(_last(work, "straight"), weights_only=False)
    got = torch.load(_last(work, "crashed"), weights_only=False)
    assert got["epoch"] == want["epoch"] == EPOCHS - 1
    for key, value in want["model"].items():
        torch.testing.assert_close(got["model"][key], value, rtol=0, atol=0, msg=key)


def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path, home):
    kill_and_resume(tmp_path, home, seed=1, kills=1)


@pytest.mark.parametrize("seed", [2, 3])
def test_training_killed_again_and_again_resumes_to_the_uninterrupted_weights(tmp_path, home, seed):
    kill_and_resume(tmp_path, home, seed=seed, kills=3)
