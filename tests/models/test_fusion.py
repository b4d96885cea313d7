import torch
from torch import nn

from segflow.models.fusion import fold_batch_norm
from segflow.models.unet import build_unet


def _trained_looking(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, as after training."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in [
                (module.running_mean, -0.5, 0.5),
                (module.running_var, 0.5, 2.0),
                (module.weight.data, 0.5, 1.5),
                (module.bias.data, -0.2, 0.2),
            ]:
                tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))
    return model.eval()


def test_folded_unet_predicts_what_the_original_does():
    model = _trained_looking(build_unet(in_channels=3, num_classes=2, depth=3, base_channels=8))
    folded = fold_batch_norm(model)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None for c in convs)  # BatchNorm's shift became the bias


def test_original_is_left_unchanged():
    model = _trained_looking(build_unet(depth=2, base_channels=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batch_norm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 10  # 2 per level
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_model_without_batch_norm_is_an_equal_copy():
    model = build_unet(depth=2, base_channels=4, batch_norm=False).eval()
    folded = fold_batch_norm(model)
    x = torch.randn(1, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)
