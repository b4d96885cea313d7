"""One epoch of steps against a deadline; the warm-up of the learning rate."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from segflow.flows.config import TrainConfig
from segflow.tasks.train.loop import make_stepper
from segflow.tasks.train.steps import Compute, Stepper, train_one_epoch, warmup_steps

STEP = 0.5  # seconds per step of the slow model


class Slow(nn.Module):
    """One weight; every forward takes `STEP` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(STEP)
        return x * self.weight


def test_an_epoch_stops_before_a_step_that_would_end_past_the_deadline():
    model = Slow()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stepper = Stepper(
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        torch.amp.GradScaler("cpu", enabled=False),
    )
    batches = [(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4))] * 10
    started = time.monotonic()
    deadline = started + 2.7 * STEP
    _, seen = train_one_epoch(
        model,
        batches,
        nn.MSELoss(),
        stepper,
        Compute(torch.device("cpu"), None, False),
        deadline=deadline,
    )
    # After 2 steps (1 s) a third would end at 1.5 s, past the deadline at 1.35 s.
    assert seen == 2 * 2
    assert time.monotonic() <= deadline


@pytest.mark.parametrize(
    ("total", "per_epoch", "warmup"),
    [(62, 31, 3), (640, 32, 32), (100_000, 500, 100), (10, 5, 1)],
)
def test_the_warm_up_is_an_epoch_at_most_a_twentieth_of_the_run(total, per_epoch, warmup):
    assert warmup_steps(total, per_epoch) == warmup


def test_a_short_run_reaches_its_full_learning_rate_after_a_twentieth_of_its_steps():
    """2 epochs of 31 steps, a 10-minute budget of base 32 on a 2-core CPU without bf16: the
    warm-up of one epoch had kept the learning rate low for half the run."""
    settings = TrainConfig(store="s", epochs=2, batch_size=8, lr=1e-3, precision="fp32").loop()
    compute = Compute(torch.device("cpu"), None, False)
    stepper = make_stepper(nn.Conv2d(1, 1, 1), settings, 31, compute, None, average=False)
    rates = []
    for _ in range(4):
        rates.append(stepper.optimizer.param_groups[0]["lr"])
        stepper.optimizer.step()
        stepper.scheduler.step()
    assert rates == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
