import numpy as np
import pytest

from segflow.tasks.train.augment import (
    Augmentation,
    augment,
    brightness_contrast,
    elastic,
    flip_rotate,
)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    mask = (rng.random((24, 24)) < 0.3).astype(np.uint8)
    image = np.stack([mask * 10.0, mask * -3.0]).astype(np.float32)  # image encodes the mask
    return image, mask


def test_flips_and_rotations_keep_image_and_mask_aligned(pair):
    image, mask = pair
    seen = set()
    for seed in range(20):
        out_image, out_mask = flip_rotate(
            image, mask, np.random.default_rng(seed), flips=True, rot90=True
        )
        np.testing.assert_array_equal(out_image[0], out_mask * 10.0)
        seen.add(out_mask.tobytes())
    assert len(seen) > 4


def affine_coefficients(image, out):
    """(c, b) with ``out == image * c + b``, from channel 0 (values 0 and 10); fails if `out`
    is not that affine map of `image`."""
    b = float(out[0][image[0] == 0][0])
    c = float((out[0][image[0] == 10][0] - b) / 10)
    np.testing.assert_allclose(out, image * c + b, rtol=1e-5, atol=1e-5)
    return c, b


def test_brightness_contrast_draws_a_new_affine_map_within_bounds(pair):
    image, _ = pair
    maps = []
    for seed in range(10):
        out = brightness_contrast(image, np.random.default_rng(seed), brightness=0.5, contrast=0.2)
        assert out.dtype == np.float32 and out.shape == image.shape
        c, b = affine_coefficients(image, out)
        assert abs(c - 1) <= 0.2 and abs(b) <= 0.5
        maps.append((c, b))
    contrasts, brightnesses = zip(*maps, strict=True)
    # every seed draws its own contrast and brightness, and both use much of their range
    assert len(set(contrasts)) == 10 and len(set(brightnesses)) == 10
    assert np.ptp(contrasts) > 0.1 and np.ptp(brightnesses) > 0.25


def test_augment_applies_exactly_the_enabled_augmentations(pair):
    image, mask = pair
    off = {"flips": False, "rot90": False, "brightness": 0.0, "contrast": 0.0}
    out_image, out_mask = augment(
        image, mask, np.random.default_rng(0), Augmentation(elastic=False, **off)
    )
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)
    shifted = Augmentation(elastic=False, **{**off, "brightness": 0.5, "contrast": 0.2})
    out_image, out_mask = augment(image, mask, np.random.default_rng(0), shifted)
    np.testing.assert_array_equal(out_mask, mask)  # intensity changes leave the mask alone
    assert affine_coefficients(image, out_image) != (1.0, 0.0)
    flipped = Augmentation(elastic=False, **{**off, "flips": True})
    masks = set()
    for seed in range(32):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed), flipped)
        np.testing.assert_array_equal(out_image[0], out_mask * 10.0)
        masks.add(out_mask.tobytes())
    assert masks == {m.tobytes() for m in (mask, mask[::-1], mask[:, ::-1], mask[::-1, ::-1])}
    deformed = Augmentation(elastic=True, **off, elastic_alpha=3.0, elastic_sigma=4.0)
    assert not np.array_equal(augment(image, mask, np.random.default_rng(0), deformed)[1], mask)


def test_elastic_keeps_classes_and_alignment(pair):
    image, mask = pair
    out_image, out_mask = elastic(image, mask, np.random.default_rng(2), alpha=3.0, sigma=4.0)
    assert set(np.unique(out_mask)) <= {0, 1} and out_mask.dtype == np.uint8
    assert not np.array_equal(out_mask, mask)
    # where the warped mask is 1, the linearly interpolated image is mostly near 10
    assert np.median(out_image[0][out_mask == 1]) > 5


def test_augment_is_reproducible_and_contiguous(pair):
    image, mask = pair
    options = Augmentation(elastic=True)
    a = augment(image, mask, np.random.default_rng(5), options)
    b = augment(image, mask, np.random.default_rng(5), options)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].flags.c_contiguous and a[1].flags.c_contiguous
