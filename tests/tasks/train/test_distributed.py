"""Data-parallel training on the CPU: two gloo ranks (this process and one helper) on a tiny
store. Without BatchNorm (its statistics are per rank) and with BCE (a mean over patches; a
batch Dice is not), two ranks of batch B step exactly as one rank of batch 2B."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import psutil
import pytest
import torch

from segflow.flows.config import TrainConfig
from segflow.models.losses import build_loss
from segflow.models.unet import build_unet
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train import distributed_launch
from segflow.tasks.train.distributed import Ranks, rank_batch
from segflow.tasks.train.distributed_launch import RankFailed, spread
from segflow.tasks.train.loop import FitResult, fit
from segflow.tasks.train.patches import EpochSampler
from tests.tasks.train.test_loop import patch_data


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch):
    """A collective that hangs fails these tests in 90 s rather than 30 min."""
    monkeypatch.setattr(distributed_launch, "TIMEOUT", timedelta(seconds=90))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tests.images import make_store

    return make_store(tmp_path_factory.mktemp("ddp"), count=6, size=64)


def settings(store: Path, **changes):
    # lr 1e-3: with a warm-up of 1 step, Adam turns float-order noise into steps of ~lr.
    tiny = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0, "device": "cpu"}
    tiny |= {"precision": "fp32", "channels_last": False, "num_workers": 0, "patch_size": 64}
    tiny |= {"val_max_tiles": 4, "patience": 0, "batch_norm": False}
    return TrainConfig(store=str(store), **{**tiny, **changes}).loop()


def train(store: Path, folder: Path, loop, save_to: Path | None = None, on_epoch=None):
    """`fit` of a seeded tiny U-Net (no BatchNorm) on 16 patches per epoch; the weights."""
    data, _ = patch_data(store, length=16)  # 64² patches
    torch.manual_seed(0)
    model = build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4, batch_norm=False)
    val_ids = open_dataset(store).samples("val")
    loss = build_loss("bce", num_classes=1)
    result = fit(
        model, data, val_ids, loss, loop, checkpoint_dir=folder, config={}, on_epoch=on_epoch
    )
    if save_to is not None:
        torch.save({"model": model.state_dict(), "result": result.__dict__}, save_to)
    return model.state_dict(), result


def on_two_ranks(store: Path, folder: Path, loop, on_epoch=None):
    """`train` on rank 0 here and rank 1 in a helper process; both ranks' weights."""
    helper = folder / "rank1.pt"
    with spread(2, "cpu", partial(train, store, folder, loop, helper)):
        weights, result = train(store, folder, loop, on_epoch=on_epoch)
    other = torch.load(helper, weights_only=False)
    assert FitResult(**other["result"]) == result  # every rank agrees on how it ended
    return weights, other["model"], result


def test_ranks_take_disjoint_shares_of_each_step():
    length, batch = 22, 6  # a remainder both per rank and per step
    single = list(EpochSampler(length))
    steps = [single[i : i + batch] for i in range(0, length - batch + 1, batch)]
    for world in (1, 2, 3):
        shares = []
        for rank in range(world):
            sampler = EpochSampler(length, rank, world)
            sampler.set_epoch(0)
            part = list(sampler)
            size = rank_batch(batch, world)
            shares.append([part[i : i + size] for i in range(0, len(part) - size + 1, size)])
        assert {len(s) for s in shares} == {len(steps)}  # every rank takes as many steps
        for step, indices in enumerate(steps):
            assert sorted(i for s in shares for i in s[step]) == indices
    sampler = EpochSampler(length, 1, 2)
    sampler.set_epoch(3)
    assert list(sampler)[:2] == [3 * length + 1, 3 * length + 3]


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(store):
    with pytest.raises(ValueError, match="batch size 6 does not split over 4 ranks"):
        rank_batch(6, 4)
    with pytest.raises(ValueError, match="batch_size 6 does not split over nproc 4"):
        TrainConfig(store=str(store), batch_size=6, nproc=4)
    assert Ranks().leader and Ranks().world == 1


def test_after_a_step_both_ranks_hold_the_same_new_weights(store, tmp_path):
    loop = settings(store, epochs=1, patches_per_epoch=16, batch_size=16)  # one step
    mine, theirs, result = on_two_ranks(store, tmp_path, loop)
    torch.manual_seed(0)
    start = build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4, batch_norm=False)
    assert result.epochs_done == 1
    for key, value in mine.items():
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(mine[k], v) for k, v in start.state_dict().items())


def test_two_ranks_of_batch_b_step_as_one_rank_of_batch_2b(store, tmp_path):
    mine, theirs, _ = on_two_ranks(store, tmp_path / "two", settings(store, nproc=2))
    single, _ = train(store, tmp_path / "one", settings(store, nproc=1))
    for key, value in single.items():  # 2 epochs x 4 steps, float sums in another order
        torch.testing.assert_close(mine[key], value, rtol=1e-4, atol=1e-5, msg=key)
        torch.testing.assert_close(theirs[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_ranks_stop_after_the_same_step_when_rank_0_runs_out_of_time(store, tmp_path):
    # Rank 1 starts later than rank 0: on its own clock it would go on training.
    loop = settings(store, epochs=5, max_minutes=0.001)
    mine, theirs, result = on_two_ranks(store, tmp_path, loop)
    assert (result.stopped, result.epochs_done) == ("time budget", 1)
    for key, value in mine.items():
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=0, msg=key)


def _helper_rank() -> psutil.Process:
    (helper,) = [
        p for p in psutil.Process().children() if "distributed_launch" in " ".join(p.cmdline())
    ]
    return helper


def test_a_killed_rank_ends_the_run_and_it_resumes_on_one_rank(store, tmp_path):
    epochs = 4
    killed_at = []

    def kill_rank_1(report):
        if report.epoch == 0:  # right after the first checkpoint
            _helper_rank().kill()
            killed_at.append(time.monotonic())

    loop = settings(store, epochs=epochs, nproc=2)
    with pytest.raises(RankFailed, match=r"rank 1 of 2 died \(SIGKILL\).*--resume"):
        on_two_ranks(store, tmp_path, loop, on_epoch=kill_rank_1)
    assert time.monotonic() - killed_at[0] < 60
    # another number of ranks resumes the same run: the batch and the patches stay the same
    resumed, result = train(store, tmp_path, settings(store, epochs=epochs, resume=True))
    assert result.epochs_done == epochs
    straight, _ = train(store, tmp_path / "straight", settings(store, epochs=epochs))
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-5, msg=key)
