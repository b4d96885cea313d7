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


def test_brightness_contrast_is_affine_within_bounds(pair):
    image, _ = pair
    out = brightness_contrast(image, np.random.default_rng(1), brightness=0.1, contrast=0.2)
    scale = (out[0].max() - out[0].min()) / (image[0].max() - image[0].min())
    assert 0.8 <= scale <= 1.2


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
