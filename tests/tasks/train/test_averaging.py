"""The moving average of the weights: its update, its checkpoint and resume, keeping it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segflow.flows.config import TrainConfig
from segflow.models.losses import build_loss
from segflow.models.unet import build_unet
from segflow.tasks.train.averaging import EMA_DECAY, WeightAverage, ema_decay
from segflow.tasks.train.balance import balance_classes
from segflow.tasks.train.checkpoints import load_checkpoint
from segflow.tasks.train.ensemble import fit_member
from segflow.tasks.train.keeping import member_scores
from segflow.tasks.train.steps import Compute, Stepper, train_one_epoch
from tests.images import make_store
from tests.tasks.train.test_loop import Interrupted, run_fit


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ema"), count=8, size=96)


def test_the_decay_warms_up_to_its_cap():
    assert [ema_decay(n) for n in (1, 2, 3)] == [2 / 11, 3 / 12, 4 / 13]
    assert ema_decay(8000) < EMA_DECAY == ema_decay(9000) == ema_decay(10**6) == 0.999


def test_the_average_follows_the_warm_decay_with_buffers():
    """Known weights in, the EMA recurrence out: parameters and BatchNorm statistics alike."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model)
    expected_weight, expected_mean = None, None
    for n, value in enumerate([1.0, 5.0, -3.0, 2.0]):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(10 * value)
        average.update()
        decay = {0: 0.0, 1: 2 / 11, 2: 3 / 12, 3: 4 / 13}[n]  # the first update copies
        expected_weight = value if n == 0 else decay * expected_weight + (1 - decay) * value
        expected_mean = 10 * value if n == 0 else decay * expected_mean + (1 - decay) * 10 * value
    assert average.updates == 4
    torch.testing.assert_close(average.module[0].weight, torch.full((2, 2), expected_weight))
    torch.testing.assert_close(average.module[1].running_mean, torch.full((2,), expected_mean))
    assert model[0].weight[0, 0] == 2.0  # the source is untouched


def test_every_step_updates_the_average_channels_last_bf16():
    torch.manual_seed(0)
    model = build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4)
    model.to(memory_format=torch.channels_last)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stepper = Stepper(optimizer, scheduler, scaler, WeightAverage(model))
    images, targets = torch.randn(5, 2, 1, 32, 32), (torch.rand(5, 2, 1, 32, 32) > 0.7).float()
    compute = Compute(torch.device("cpu"), torch.bfloat16, channels_last=True)
    loss_fn = build_loss("bce_dice", num_classes=1)
    train_one_epoch(model, list(zip(images, targets, strict=True)), loss_fn, stepper, compute)
    average = stepper.average.module
    assert stepper.average.updates == 5
    for name, value in average.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            assert not torch.equal(value, model.state_dict()[name]), name  # lags the model
            assert not torch.equal(value, initial[name]), name  # but has moved
    convs = [m.weight for m in average.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_fit_checkpoints_the_average_and_resume_restores_it(store, tmp_path):
    run_fit(store, tmp_path / "a", epochs=3)
    with pytest.raises(Interrupted):
        run_fit(store, tmp_path / "b", epochs=3, interrupt_after=1)
    run_fit(store, tmp_path / "b", epochs=3, resume=True, seed=99)
    straight, resumed = (load_checkpoint(tmp_path / f / "ema.pt") for f in ("a", "b"))
    steps = 3 * 16 // 4  # epochs x patches / batch
    assert straight["updates"] == resumed["updates"] == steps and straight["epoch"] == 2
    assert load_checkpoint(tmp_path / "a" / "last.pt")["ema"]["n_averaged"] == steps
    last = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0)
    assert not torch.equal(straight["model"]["head.weight"], last["head.weight"])


def test_resume_of_a_checkpoint_without_an_average_starts_it_there(store, tmp_path):
    run_fit(store, tmp_path, epochs=1)
    state = load_checkpoint(tmp_path / "last.pt")
    del state["ema"]  # as written by earlier versions
    torch.save(state, tmp_path / "last.pt")
    model, _, _ = run_fit(store, tmp_path, epochs=2, resume=True)
    assert load_checkpoint(tmp_path / "ema.pt")["updates"] == 16 // 4  # the new epoch's steps


def tiny_config(store, tmp_path, **changes):
    tiny = {"epochs": 3, "patches_per_epoch": 16, "patch_size": 32, "batch_size": 4}
    tiny |= {"base_channels": 4, "depth": 2, "num_workers": 0, "val_max_tiles": 16}
    tiny |= {"precision": "fp32", "channels_last": False, "device": "cpu", "lr": 1e-3}
    return TrainConfig(store=str(store), workdir=str(tmp_path), **{**tiny, **changes})


def test_weights_ema_keeps_the_average(tmp_path):
    store = make_store(tmp_path, count=8, size=64)
    config = tiny_config(store, tmp_path, weights="ema")
    balance = balance_classes(config.store, config.sampling())
    settings = config.members(config.unet(balance.in_channels, balance.out_channels))
    model, _, kept = fit_member(balance, 0, tmp_path / "m", settings)
    assert kept.weights == "ema" and kept.learned
    ema = load_checkpoint(tmp_path / "m" / "ema.pt")["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ema[key], rtol=0, atol=0)
    scores = member_scores(model, balance, settings.loop)  # the same tiles as during training
    assert kept.val_dice == kept.candidates["ema"] == scores.dice
    assert set(kept.candidates) == {"best", "last", "ema"}
    assert kept.candidates["ema"] not in (kept.candidates["best"], kept.candidates["last"])


def test_two_ranks_average_the_unwrapped_model_on_rank_0(tmp_path):
    """Rank 0 averages the module inside DistributedDataParallel: its EMA is the one a single
    rank of twice the batch keeps."""
    from tests.tasks.train.test_distributed import on_two_ranks, settings, train

    store = make_store(tmp_path, count=6, size=64)
    on_two_ranks(store, tmp_path / "two", settings(store, nproc=2))
    train(store, tmp_path / "one", settings(store, nproc=1))
    two, one = (load_checkpoint(tmp_path / f / "ema.pt") for f in ("two", "one"))
    assert two["updates"] == one["updates"] == 2 * 4  # epochs x steps
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
