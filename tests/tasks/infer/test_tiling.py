"""Tiled prediction with known-answer predictors on odd, non-square sizes and regions."""

from itertools import product

import numpy as np
import pytest

from segflow.tasks.infer.tiling import (
    Tiling,
    batches,
    gaussian_weights,
    predict_region,
    read_mirrored,
    spans,
)
from segflow.tasks.storage.grid import blocks, pieces


def reader(image):
    return lambda y0, y1, x0, x1: image[:, y0:y1, x0:x1]


def plus_one(tiles):
    return tiles[:, :1].astype(np.float32) + 1


def mean3(tiles):
    """3x3 mean filter with mirrored borders: a local, translation-equivariant predictor."""
    padded = np.pad(
        tiles[:, :1].astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="symmetric"
    )
    h, w = tiles.shape[2:]
    total = sum(padded[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return (total / 9).astype(np.float32)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (2, 67, 101)).astype(np.uint8)


def overlap_tile(tile, margin):
    return Tiling(tile=tile, blend="overlap-tile", margin=margin, overlap=0.0)


def gaussian(tile, margin, overlap=0.25):
    return Tiling(tile=tile, blend="gaussian", margin=margin, overlap=overlap)


TILINGS = [overlap_tile(32, 4), overlap_tile(31, 0), gaussian(32, 32), gaussian(24, 32, 0.5)]


@pytest.mark.parametrize("tiling", TILINGS)
def test_known_answer_predictor_stitches_exactly(image, tiling):
    out = predict_region(reader(image), image.shape[1:], (0, 67, 0, 101), plus_one, tiling, batch=4)
    np.testing.assert_allclose(out, image[:1] + 1.0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("tiling", TILINGS)
def test_result_does_not_depend_on_the_regions(image, tiling):
    whole = predict_region(reader(image), image.shape[1:], (0, 67, 0, 101), mean3, tiling, batch=4)
    pieces = np.zeros_like(whole)
    for y0, y1 in ((0, 13), (13, 50), (50, 67)):
        for x0, x1 in ((0, 41), (41, 42), (42, 101)):
            pieces[:, y0:y1, x0:x1] = predict_region(
                reader(image), image.shape[1:], (y0, y1, x0, x1), mean3, tiling, batch=3
            )
    np.testing.assert_array_equal(pieces, whole)


def test_overlap_tile_equals_whole_image_prediction(image):
    """With a margin at least the predictor's radius, seams vanish exactly."""
    tiling = overlap_tile(16, 1)
    out = predict_region(reader(image), image.shape[1:], (0, 67, 0, 101), mean3, tiling, batch=4)
    np.testing.assert_allclose(out, mean3(image[None])[0], rtol=0, atol=1e-5)


def test_tile_larger_than_image_is_mirrored(image):
    small = image[:, :5, :7]
    window = read_mirrored(reader(small), (5, 7), -3, -2, 16, 16)
    assert window.shape == (2, 16, 16)
    np.testing.assert_array_equal(window[:, 3:8, 2:9], small)
    out = predict_region(reader(small), (5, 7), (0, 5, 0, 7), plus_one, gaussian(64, 32), batch=4)
    np.testing.assert_allclose(out, small[:1] + 1.0, atol=1e-4)


def test_spans_cover_each_axis():
    tiles = spans(1000, overlap_tile(256, 8))
    assert [(s.out_start, s.out_stop) for s in tiles][-1] == (768, 1000)
    assert tiles[-1].win_stop - tiles[-1].win_start == 232 + 16
    windows = spans(1000, gaussian(256, 0))
    assert [s.win_start for s in windows] == [0, 192, 384, 576, 744]
    assert spans(100, gaussian(256, 8)) == [(0, 100, -8, 248)]
    widened = spans(1000, gaussian(256, 8))
    assert widened[0] == (0, 248, -8, 248) and widened[-1] == (752, 1000, 752, 1008)


def test_batches_hold_each_tile_once_in_equally_sized_groups():
    rows, cols = spans(100, overlap_tile(32, 4)), spans(70, overlap_tile(32, 4))
    groups = list(batches(rows, cols, 4))
    assert sorted(w for group in groups for w in group) == sorted(product(rows, cols))
    for group in groups:
        assert 1 <= len(group) <= 4
        assert len({(r.win_stop - r.win_start, c.win_stop - c.win_start) for r, c in group}) == 1


def test_gaussian_weights_peak_in_the_centre():
    w = gaussian_weights(32)
    assert w.shape == (32, 32) and w.min() > 0
    assert w[15:17, 15:17].min() == pytest.approx(w.max(), rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile": 0}, "tile must be positive, got 0"),
        ({"margin": -1}, "margin must be >= 0, got -1"),
        ({"blend": "gaussian", "overlap": 1.0}, r"overlap must be in \[0, 1\), got 1.0"),
        ({"blend": "nearest"}, "blend must be .* got 'nearest'"),
    ],
)
def test_bad_tiling_is_refused(kwargs, message):
    good = {"tile": 8, "blend": "overlap-tile", "margin": 0, "overlap": 0.0}
    with pytest.raises(ValueError, match=message):
        Tiling(**{**good, **kwargs})


def test_pieces_absorb_a_thin_remainder():
    assert pieces(1000, 256) == [(0, 256), (256, 512), (512, 768), (768, 1000)]  # 232 >= 128
    assert pieces(1100, 256)[-1] == (768, 1100)  # 76 < 128 joins the last tile
    assert pieces(300, 256) == [(0, 300)]
    assert pieces(100, 256) == [(0, 100)]
    assert pieces(384, 256) == [(0, 256), (256, 384)]  # exactly half stays a piece


def test_a_tile_never_straddles_two_blocks():
    for length in range(1, 1600):
        tile_borders = {s.out_start for s in spans(length, overlap_tile(64, 4))}
        block_borders = {y0 for y0, _, _, _ in blocks((length, 1), 256)}
        assert block_borders <= tile_borders, length
