"""The store's fingerprint: object widths of known shapes, and a tiny store's sizes."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.tasks.train.fingerprint import fingerprint_store, object_widths, weighted_median
from tests.images import make_store


def disc(mask, centre, radius, value=1):
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    mask[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2] = value


def test_object_widths_of_known_shapes():
    mask = np.zeros((80, 120), np.uint8)
    mask[10:15, 5:100] = 1  # a bar 5 px wide
    disc(mask, (50, 40), 10)  # a disc 21 px across
    mask[70:80, 110:120] = 2  # another class, cut by the border: 10 px wide inside
    widths, sizes = object_widths(mask, (1, 2))
    # the bar; the square of 10 px (2 * 5 - 1: pixel centres); the disc, its rim ragged
    assert sorted(widths.tolist()) == pytest.approx([5.0, 9.0, 21.0], rel=0.1)
    assert sorted(sizes.tolist()) == sorted([5 * 95, int((mask == 1).sum()) - 5 * 95, 100])
    assert object_widths(np.zeros((8, 8), np.uint8), (1,))[0].size == 0


def test_the_structure_scale_counts_pixels_not_objects():
    # 30 specks of 1 px and one disc of 21 px: most foreground pixels lie in the disc.
    widths, sizes = np.array([1.0] * 30 + [21.0]), np.array([1] * 30 + [349])
    assert weighted_median(widths, sizes) == 21.0
    assert weighted_median(np.zeros(0), np.zeros(0)) == 0.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("fingerprint"), count=8, size=96)


def test_fingerprint_of_a_tiny_store(store):
    found = fingerprint_store(str(store))
    assert found.samples == 4 and found.channels == 1 and found.image_side == 96
    assert found.train_pixels == 4 * 96 * 96
    assert sum(found.class_fractions) == pytest.approx(1.0) and found.class_fractions[1] > 0
    assert 1 <= found.structure_width < 96
    assert "4 train images" in found.line()
