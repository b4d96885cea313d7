"""One epoch of steps against a deadline."""

from __future__ import annotations

import time

import torch
from torch import nn

from segflow.tasks.train.steps import Compute, Stepper, train_one_epoch

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
