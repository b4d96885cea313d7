"""Average the probabilities of several segmentation models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def logits_to_probabilities(logits: Tensor) -> Tensor:
    """Sigmoid for one logit channel, softmax over channels otherwise; float32 ``(N, K, H, W)``."""
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


class ProbabilityEnsemble(nn.Module):
    """Members share input and output shapes; ``forward`` returns their mean probability.

    A single member is a plain model returning probabilities instead of logits.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, K, H, W)`` mean probabilities."""
        total = logits_to_probabilities(self.members[0](x))
        for member in self.members[1:]:
            total = total + logits_to_probabilities(member(x))
        return total / len(self.members)
