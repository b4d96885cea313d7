import pytest
import torch

from segflow.models.losses import bce_dice_loss
from segflow.models.unet import UNet, UNetConfig, build_unet


@pytest.mark.parametrize(("height", "width"), [(37, 51), (64, 64), (100, 33), (1, 3)])
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 1), (3, 3)])
def test_output_matches_input_size(height, width, in_channels, num_classes):
    model = build_unet(in_channels=in_channels, num_classes=num_classes, depth=3, base_channels=4)
    out = model.eval()(torch.randn(2, in_channels, height, width))
    assert out.shape == (2, num_classes, height, width)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_any_depth_with_and_without_batch_norm(depth, batch_norm):
    model = build_unet(depth=depth, base_channels=4, batch_norm=batch_norm)
    assert model(torch.randn(2, 1, 37, 51)).shape == (2, 1, 37, 51)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert has_bn == batch_norm
    assert len(model.downs) == len(model.ups) == depth


def test_padding_does_not_leak_into_the_image():
    # Cutting 2 rows (then padded back internally) changes only pixels within the receptive
    # field (< 30 px at depth 2) of the bottom edge: output stays aligned with the input.
    model = build_unet(depth=2, base_channels=4).eval()
    x = torch.randn(1, 1, 64, 32)
    with torch.no_grad():
        full, cut = model(x), model(x[..., :62, :])
    torch.testing.assert_close(full[..., :32, :], cut[..., :32, :])
    assert not torch.allclose(full[..., 60:62, :], cut[..., 60:, :])


def test_channels_last_and_bf16_autocast():
    model = build_unet(in_channels=3, num_classes=2, depth=3, base_channels=4).eval()
    x = torch.randn(2, 3, 37, 51)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        fast = model(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)
    assert low.shape == reference.shape
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_config_round_trip_and_attribute():
    config = UNetConfig(in_channels=3, num_classes=4, depth=2, base_channels=8, batch_norm=False)
    assert UNetConfig.from_dict(config.to_dict()) == config
    assert UNet(config).config is config
    assert build_unet(depth=2).config == UNetConfig(depth=2)
    with pytest.raises(ValueError, match="unknown UNetConfig keys.*'width'"):
        UNetConfig.from_dict({**config.to_dict(), "width": 3})


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("in_channels", 0, ValueError),
        ("num_classes", -1, ValueError),
        ("depth", 0, ValueError),
        ("depth", 9, ValueError),
        ("base_channels", 0, ValueError),
        ("depth", 2.0, TypeError),
        ("in_channels", True, TypeError),
        ("batch_norm", 1, TypeError),
    ],
)
def test_bad_config_values_raise(field, value, error):
    with pytest.raises(error, match=f"UNetConfig.{field}.*{value}"):
        UNetConfig(**{field: value})


def test_bad_inputs_raise():
    model = build_unet(in_channels=3, depth=2, base_channels=4)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        model(torch.randn(2, 1, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="UNetConfig"):
        UNet({"depth": 2})


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = build_unet(depth=2, base_channels=4)
    x = torch.randn(2, 1, 16, 16)
    target = (x > 0.5).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = bce_dice_loss(model(x), target)
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < 0.7 * losses[0]
