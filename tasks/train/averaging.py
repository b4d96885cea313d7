"""An exponential moving average (EMA) of the weights, updated after every optimizer step.

PyTorch's own :class:`~torch.optim.swa_utils.AveragedModel` holds the average, with its EMA
update (:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`) and ``use_buffers=True``, so the
BatchNorm running statistics are averaged with the parameters (no ``update_bn`` pass after
training).

The decay warms up: the update after ``n`` earlier ones uses ``min(EMA_DECAY, (1 + n) / (10 +
n))`` (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``). A fixed 0.999 averages over
about 1000 steps: a run of a few hundred steps (ten CPU minutes of 32-step epochs) would still
hold about 70 % of its random initial weights (0.999^375). With the warm-up, step k of N weighs
in proportion to about ``(k / N)^8``: the average's mean age is about N / 10 steps, the
low-rate end of the cosine schedule, whatever the run's length; from 8990 steps on the cap
0.999 holds (a window of about 1000 steps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

EMA_DECAY = 0.999

MultiAvgFn = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], torch.Tensor | int], None]


def ema_decay(averaged: int, decay: float = EMA_DECAY) -> float:
    """The decay of the update that follows `averaged` earlier ones:
    ``min(decay, (1 + averaged) / (10 + averaged))``."""
    return min(decay, (1 + averaged) / (10 + averaged))


def warm_ema(decay: float = EMA_DECAY) -> MultiAvgFn:
    """``multi_avg_fn`` for ``AveragedModel``: PyTorch's EMA update at :func:`ema_decay`.

    Raises
    ------
    ValueError
        `decay` is outside [0, 1].
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay!r}")

    def update(
        averaged: Sequence[torch.Tensor],
        current: Sequence[torch.Tensor],
        n: torch.Tensor | int,
    ) -> None:
        # `n` lives on the weights' device: one sync per step, as the loop's ``loss.item()``.
        get_ema_multi_avg_fn(ema_decay(int(n), decay))(averaged, current, n)

    return update


class WeightAverage:
    """The EMA of `model`'s parameters and buffers, on `model`'s device and memory format.

    `model` is the module the optimizer steps (under DistributedDataParallel, the unwrapped
    one); :meth:`update` follows every step.
    """

    def __init__(self, model: nn.Module, decay: float = EMA_DECAY) -> None:
        self.source = model
        self.averaged = AveragedModel(model, multi_avg_fn=warm_ema(decay), use_buffers=True)
        self.averaged.module.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged weights, in a copy of `model`."""
        return self.averaged.module

    @property
    def updates(self) -> int:
        """The steps averaged so far."""
        return int(self.averaged.n_averaged)

    def update(self) -> None:
        """Average in the source model's current weights (the first update copies them)."""
        self.averaged.update_parameters(self.source)

    def reset(self) -> None:
        """Start again from the source model's current weights (a resume without an EMA)."""
        self.module.load_state_dict(self.source.state_dict())
        self.averaged.n_averaged.zero_()

    def state_dict(self) -> dict[str, Any]:
        """``n_averaged`` and ``module.<name>`` tensors, for the resume checkpoint."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.averaged.load_state_dict(state)
