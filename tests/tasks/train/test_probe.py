"""The speed probe times real training steps (not the warm-up) and scales the validation it
times to an epoch's tiles."""

from __future__ import annotations

import math
import time

import pytest
from torch import nn

from segflow.flows.config import TrainConfig
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train import probe
from segflow.tasks.train.balance import balance_classes
from segflow.tasks.train.probe import measure_throughput, validation_tiles
from tests.images import make_store

TINY = dict(patch_size=32, batch_size=4, base_channels=4, depth=2, num_workers=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny store's balance and the members' settings (96² images, 32² tiles: 9 per
    image)."""
    store = make_store(tmp_path_factory.mktemp("probe"), count=8, size=96)
    config = TrainConfig(store=str(store), precision="fp32", val_max_tiles=40, **TINY)
    balance = balance_classes(str(store), config.sampling())
    unet = config.unet(balance.in_channels, balance.out_channels)
    return balance, config.members(unet, balance.levers.batch_factor)


def test_the_probe_measures_a_tiny_unet(tiny):
    balance, members = tiny
    measured = measure_throughput(balance, members, seconds=0.5)
    assert math.isfinite(measured.patches_per_second) and measured.patches_per_second > 0
    assert measured.validation_seconds > 0 and measured.checkpoint_seconds > 0
    assert measured.snapshot_seconds > 0 and measured.device == "cpu fp32"
    parts = measured.validation_seconds + measured.checkpoint_seconds + measured.snapshot_seconds
    assert measured.seconds > parts


class SlowLoss(nn.Module):
    """`loss` that takes `seconds` per call, and `warmup_seconds` for the first `warmup`."""

    def __init__(self, loss, seconds, warmup, warmup_seconds):
        super().__init__()
        self.loss, self.seconds, self.calls = loss, seconds, 0
        self.warmup, self.warmup_seconds = warmup, warmup_seconds

    def forward(self, logits, targets):
        self.calls += 1
        time.sleep(self.warmup_seconds if self.calls <= self.warmup else self.seconds)
        return self.loss(logits, targets)


def test_the_probe_counts_the_steps_after_the_warm_up(tiny, monkeypatch):
    """Steps of 100 ms after two of 1 s, with a model of one 1x1 convolution: 4 patches per
    100 ms is 40 patches/s (less the time of reading the patches); counting the warm-up would
    give about 9."""
    real_parts = probe.member_parts

    def slow_parts(balance, member, settings):
        _, data, loss = real_parts(balance, member, settings)
        return nn.Conv2d(1, 1, 1), data, SlowLoss(loss, 0.1, probe.WARMUP_STEPS, 1.0)

    monkeypatch.setattr(probe, "member_parts", slow_parts)
    balance, members = tiny
    measured = measure_throughput(balance, members, seconds=0.6)
    assert 0.5 * 40 < measured.patches_per_second <= 40


def test_the_timed_validation_is_scaled_to_an_epochs_tiles(tiny, monkeypatch):
    """20 ms per tile: the epoch's 18 tiles (2 val images of 9) take 0.36 s, though the probe
    times only 8 of them."""
    timed = []

    def fake_validate(*args, max_tiles, **kwargs):
        timed.append(max_tiles)
        time.sleep(0.02 * max_tiles)

    monkeypatch.setattr(probe, "validate", fake_validate)
    balance, members = tiny
    assert validation_tiles(balance, members, open_dataset(balance.store)) == 18
    measured = measure_throughput(balance, members, seconds=0.1)
    assert timed == [probe.WARMUP_TILES, probe.VALIDATION_TILES]
    assert measured.validation_seconds == pytest.approx(0.36, rel=0.2)


def test_the_probe_needs_a_warm_up(tiny):
    with pytest.raises(ValueError, match="warmup >= 1"):
        measure_throughput(*tiny, warmup=0)
