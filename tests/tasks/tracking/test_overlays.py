"""Overlay panels: large enough to judge, with a legend and the image's Dice."""

import numpy as np
import pytest

from segflow.tasks.tracking.overlays import LEGEND, overlay, overlay_dice


def _pair(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros(size, np.uint8)
    truth[4:20, 4:20] = 1
    pred = np.zeros(size, np.uint8)
    pred[12:28, 4:20] = 1
    return truth, pred


def test_small_images_are_enlarged_to_at_least_512_px():
    truth, pred = _pair((40, 60))
    panel = overlay(np.zeros((1, 40, 60)), truth, pred, "img")
    # 60 px -> 9x = 540 px per panel; two panels side by side, a legend strip on top.
    assert panel.shape == (28 + 360, 2 * 540, 3) and panel.dtype == np.uint8


def test_colours_follow_the_legend():
    truth, pred = _pair((32, 32))
    panel = overlay(np.zeros((1, 32, 32)), truth, pred)[28:]  # 16x: 512 px
    right = panel[:, 512:]

    def colour(y: int, x: int) -> tuple[int, ...]:
        return tuple(int(c) for c in right[y * 16 + 8, x * 16 + 8])

    blend = {k: tuple(int(0.6 * c) for c in v) for k, v in LEGEND.items()}  # over black
    assert colour(6, 10) == pytest.approx(blend["truth only"], abs=1)
    assert colour(24, 10) == pytest.approx(blend["prediction only"], abs=1)
    assert colour(14, 10) == pytest.approx(blend["both"], abs=1)
    assert colour(30, 30) == (0, 0, 0)


def test_header_shows_the_legend_and_the_dice():
    truth, pred = _pair((32, 32))
    header = overlay(np.zeros((1, 32, 32)), truth, pred)[:28]
    for rgb in LEGEND.values():  # each swatch is drawn in its colour
        assert (header == np.asarray(rgb, np.uint8)).all(axis=-1).sum() >= 100
    assert overlay_dice(truth, pred) == pytest.approx(2 * 128 / 512)
    assert overlay_dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
