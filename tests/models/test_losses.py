import math

import pytest
import torch
import torch.nn.functional as F

from segflow.models.losses import (
    BINARY_LOSSES,
    LOSSES,
    MULTICLASS_LOSSES,
    bce_dice_loss,
    bce_loss,
    build_loss,
    ce_dice_loss,
    ce_loss,
    default_loss,
    soft_dice_loss,
    soft_jaccard_loss,
)

TARGET = torch.tensor([[[1, 0], [1, 1]]])  # (N=1, H=2, W=2), 3 of 4 pixels foreground


def test_known_values_at_probability_one_half():
    logits = torch.zeros(1, 1, 2, 2)
    # sum p = 2, sum t = 3, intersection = 1.5
    assert bce_loss(logits, TARGET).item() == pytest.approx(math.log(2))
    assert soft_dice_loss(logits, TARGET).item() == pytest.approx(1 - (3 + 1) / (5 + 1))
    assert soft_jaccard_loss(logits, TARGET).item() == pytest.approx(1 - 2.5 / 4.5)
    assert soft_dice_loss(logits, TARGET, smooth=0).item() == pytest.approx(1 - 3 / 5)
    combined = bce_dice_loss(logits, TARGET, bce_weight=2.0, dice_weight=0.5).item()
    assert combined == pytest.approx(2 * math.log(2) + 0.5 / 3)


def test_multiclass_known_values():
    logits = torch.zeros(1, 3, 2, 2)  # uniform 1/3; target has class 0 once, class 1 thrice
    # per class: intersection 1/3 and 1; cardinality 4/3 + 1 and 4/3 + 3; class 2: 0 and 4/3
    dice = [(2 / 3 + 1) / (7 / 3 + 1), (2 + 1) / (13 / 3 + 1), 1 / (4 / 3 + 1)]
    assert soft_dice_loss(logits, TARGET).item() == pytest.approx(1 - sum(dice) / 3)
    assert ce_loss(logits, TARGET).item() == pytest.approx(math.log(3))
    assert ce_dice_loss(logits, TARGET, dice_weight=0).item() == pytest.approx(math.log(3))


@pytest.mark.parametrize("pos_weight", [None, 3.0, torch.tensor([0.5])])
def test_bce_matches_torch(pos_weight):
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 5, 7)
    target = (torch.rand(2, 5, 7) > 0.6).long()
    weight = None if pos_weight is None else torch.as_tensor(pos_weight)
    expected = F.binary_cross_entropy_with_logits(
        logits, target[:, None].float(), pos_weight=weight
    )
    torch.testing.assert_close(bce_loss(logits, target, pos_weight), expected)
    torch.testing.assert_close(bce_loss(logits, target[:, None].float(), pos_weight), expected)


def test_ce_matches_torch_with_class_weights():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    weights = [0.2, 1.0, 3.0]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights))
    torch.testing.assert_close(ce_loss(logits, target, class_weights=weights), expected)
    with pytest.raises(ValueError, match="one value per class"):
        ce_loss(logits, target, class_weights=[1.0, 2.0])


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("loss", [soft_dice_loss, soft_jaccard_loss])
def test_perfect_prediction_is_zero_and_inverted_is_one(loss, num_classes):
    torch.manual_seed(0)
    target = torch.randint(0, max(num_classes, 2), (2, 16, 16))
    if num_classes == 1:
        perfect = 40.0 * (2 * target[:, None].float() - 1)
    else:
        perfect = 40.0 * (2 * F.one_hot(target, num_classes).permute(0, 3, 1, 2).float() - 1)
    assert loss(perfect, target).item() == pytest.approx(0, abs=1e-6)
    # Every class present, so smoothing keeps the inverted score only ~1 / |T_c| from zero.
    assert loss(-perfect, target).item() > 0.95


@pytest.mark.parametrize("num_classes", [1, 2])
def test_empty_mask_predicted_empty_is_perfect_with_finite_gradient(num_classes):
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    logits = torch.full((1, num_classes, 8, 8), -20.0)
    if num_classes == 2:
        logits[:, 0] = 20.0  # confident background everywhere
    logits.requires_grad_(True)
    for loss in (soft_dice_loss, soft_jaccard_loss):
        value = loss(logits, target)
        value.backward()
        assert value.item() == pytest.approx(0, abs=1e-6)
        assert torch.isfinite(logits.grad).all()


def test_bf16_logits_give_float32_loss():
    logits = torch.randn(2, 1, 8, 8).bfloat16()
    target = torch.randint(0, 2, (2, 8, 8))
    assert bce_dice_loss(logits, target).dtype == torch.float32


def test_bad_shapes_and_targets_raise():
    with pytest.raises(ValueError, match="C == 1, got C = 3"):
        bce_loss(torch.zeros(1, 3, 2, 2), TARGET)
    with pytest.raises(ValueError, match="C >= 2, got C = 1"):
        ce_loss(torch.zeros(1, 1, 2, 2), TARGET)
    with pytest.raises(ValueError, match=r"does not match logits"):
        bce_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"in \[0, 1\], got values in \[0, 2\]"):
        ce_loss(torch.zeros(1, 2, 2, 2), TARGET * 2)
    with pytest.raises(TypeError, match="integer class ids"):
        soft_dice_loss(torch.zeros(1, 2, 2, 2), TARGET.float())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        soft_dice_loss(torch.zeros(2, 2), TARGET)


def test_build_loss_names_and_weights():
    logits, target = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 4, 4))
    for name in BINARY_LOSSES:
        assert torch.isfinite(build_loss(name, num_classes=1)(logits, target))
    loss = build_loss("bce", num_classes=1, pos_weight=2.0)
    torch.testing.assert_close(loss(logits, target), bce_loss(logits, target, 2.0))
    logits = torch.randn(2, 3, 4, 4)
    for name in MULTICLASS_LOSSES:
        assert torch.isfinite(build_loss(name, num_classes=3)(logits, target))
    loss = build_loss("ce_dice", num_classes=3, class_weights=[1.0, 2.0, 3.0])
    expected = ce_dice_loss(logits, target, class_weights=[1.0, 2.0, 3.0])
    torch.testing.assert_close(loss(logits, target), expected)
    assert set(BINARY_LOSSES) | set(MULTICLASS_LOSSES) == set(LOSSES)


@pytest.mark.parametrize(
    ("name", "num_classes", "kwargs", "match"),
    [
        ("ce", 1, {}, r"'ce' not allowed for num_classes=1.*'bce'"),
        ("bce_dice", 3, {}, r"'bce_dice' not allowed for num_classes=3.*'ce_dice'"),
        ("focal", 1, {}, "'focal' not allowed"),
        ("dice", 1, {"pos_weight": 2.0}, "pos_weight is only used by"),
        ("ce", 3, {"pos_weight": 2.0}, "pos_weight is only used by"),
        ("dice", 3, {"class_weights": [1, 1, 1]}, "class_weights is only used by"),
        ("dice", 0, {}, "num_classes must be >= 1"),
    ],
)
def test_build_loss_rejects(name, num_classes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_loss(name, num_classes=num_classes, **kwargs)


def test_auto_loss_follows_the_number_of_logits():
    assert default_loss("auto", 1) == "bce_dice"
    assert default_loss("auto", 3) == "ce_dice"
    assert default_loss("dice", 3) == "dice"
