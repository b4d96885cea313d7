import torch

from segflow.models.ensemble import ProbabilityEnsemble, logits_to_probabilities
from segflow.models.unet import build_unet


def test_ensemble_is_the_mean_of_member_probabilities():
    torch.manual_seed(0)
    members = [
        build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4).eval() for _ in range(3)
    ]
    x = torch.randn(2, 1, 20, 28)
    expected = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
    torch.testing.assert_close(ProbabilityEnsemble(members).eval()(x), expected)


def test_multiclass_probabilities_sum_to_one():
    probs = logits_to_probabilities(torch.randn(2, 4, 5, 5))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 5, 5))
