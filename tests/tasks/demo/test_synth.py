"""Tests for the seeded synthetic data generator."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import tifffile
from PIL import Image

from segflow.tasks.demo.large import write_large_pair
from segflow.tasks.demo.synth import SynthSpec, synth_pair, write_dataset
from segflow.tasks.demo.texture import draw_grids, texture

SPEC_FIELDS = {field.name for field in fields(SynthSpec)}


def _with_spec(kwargs: dict) -> dict:
    """Keyword arguments with the SynthSpec fields among them gathered into `spec`."""
    spec = SynthSpec(**{k: v for k, v in kwargs.items() if k in SPEC_FIELDS})
    return {k: v for k, v in kwargs.items() if k not in SPEC_FIELDS} | {"spec": spec}


def _pair(seed: int = 0, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    kwargs = {"height": 96, "width": 128, **kwargs}
    return synth_pair(np.random.default_rng(seed), **_with_spec(kwargs))


@pytest.mark.parametrize(
    ("channels", "dtype", "shape"),
    [
        (1, "uint8", (96, 128)),
        (3, "uint8", (96, 128, 3)),
        (4, "uint8", (96, 128, 4)),
        (1, "uint16", (96, 128)),
        (3, "uint16", (96, 128, 3)),
    ],
)
def test_synth_pair_shapes_and_dtypes(channels, dtype, shape):
    image, mask = _pair(channels=channels, dtype=dtype)
    assert image.shape == shape
    assert image.dtype == np.dtype(dtype)
    assert mask.shape == (96, 128)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}


def test_uint16_uses_a_wide_range():
    peaks = [_pair(seed, dtype="uint16")[0].max() for seed in range(4)]
    assert min(peaks) > 1000
    assert max(peaks) > 4000


def test_rgba_alpha_is_opaque():
    image, _ = _pair(channels=4)
    assert np.all(image[..., 3] == 255)


def test_rgb_foreground_is_tinted():
    image, mask = _pair(channels=3, height=128, width=128)
    rgb = image.astype(float)
    fg, bg = rgb[mask == 1].mean(axis=0), rgb[mask == 0].mean(axis=0)
    # Colour, not just brightness: the channel ratios differ between foreground and background.
    assert np.abs(fg / fg.sum() - bg / bg.sum()).max() > 0.02


def test_foreground_is_brighter_but_not_separable_by_threshold():
    image, mask = _pair(height=192, width=192)
    grey, fg = image.astype(float), mask > 0
    assert grey[fg].mean() > grey[~fg].mean() + 10
    best = max(
        2 * np.sum((grey > t) & fg) / (np.sum(grey > t) + fg.sum())
        for t in np.unique(np.percentile(grey, np.linspace(50, 99.5, 60)))
    )
    assert 0.3 < best < 0.95


def test_same_seed_same_pair_and_other_seed_differs():
    a_img, a_mask = _pair(seed=3, channels=3)
    b_img, b_mask = _pair(seed=3, channels=3)
    c_img, c_mask = _pair(seed=4, channels=3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_mask, c_mask)


@pytest.mark.parametrize("fg_fraction", [0.005, 0.02, 0.08, 0.3])
def test_realised_foreground_fraction_near_target(fg_fraction):
    fractions = [
        np.mean(_pair(seed, height=128, width=128, fg_fraction=fg_fraction)[1] > 0)
        for seed in range(10)
    ]
    assert all(f > 0 for f in fractions)
    assert fg_fraction / 2 < np.mean(fractions) < fg_fraction * 2


def test_multi_class_shapes_are_distinct_and_all_present():
    masks = [
        _pair(seed, height=128, width=128, num_classes=4, fg_fraction=0.15)[1] for seed in range(3)
    ]
    assert all(set(np.unique(m)) == {0, 1, 2, 3} for m in masks)
    sizes = {k: np.mean([np.sum(m == k) for m in masks]) for k in (1, 2, 3)}
    assert all(v > 0 for v in sizes.values())


def _read(path):
    return tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))


def test_thin_objects_are_curves_with_unlabelled_look_alikes(monkeypatch):
    from skimage.morphology import binary_erosion, disk

    from segflow.tasks.demo import synth

    image, mask = _pair(height=320, width=480, fg_fraction=0.015, objects="thin")
    fg = mask > 0
    assert 0.01 < fg.mean() < 0.025
    # no blob: eroding by a disk of radius 3 leaves (almost) nothing of a 3-5 px wide curve
    assert binary_erosion(fg, disk(3)).sum() < 0.02 * fg.sum()
    monkeypatch.setattr(synth, "LOOKALIKE_GAIN", 0.0)
    without, same_mask = _pair(height=320, width=480, fg_fraction=0.015, objects="thin")
    assert np.array_equal(mask, same_mask)  # look-alikes are not labelled...
    changed = np.abs(image.astype(int) - without.astype(int)) > 3  # grey images
    assert changed.sum() > 0.5 * fg.sum() and changed[fg].mean() < 0.01  # ...but painted beside


def test_spots_are_small_whatever_the_image_size_and_a_rare_class_is_rare():
    from skimage.measure import label, regionprops

    _, mask = _pair(height=1024, width=1024, fg_fraction=0.01, objects="spots")
    areas = [r.area for r in regionprops(label(mask > 0))]
    assert len(areas) > 20 and np.median(areas) < np.pi * 10**2
    _, mask = _pair(height=512, width=512, num_classes=3, class_shares=(0.95, 0.05))
    counts = np.bincount(mask.ravel(), minlength=3)
    assert 0 < counts[2] < 0.15 * counts[1]


def test_write_dataset_binary_masks_are_0_255(tmp_path):
    pairs = write_dataset(tmp_path, count=3, size=(64, 80), seed=1)
    assert [p.name for p, _ in pairs] == ["sample_000.png", "sample_001.png", "sample_002.png"]
    for image_path, mask_path in pairs:
        assert image_path.parent == tmp_path / "images"
        assert mask_path.parent == tmp_path / "masks"
        assert _read(image_path).shape == (64, 80)
        mask = _read(mask_path)
        assert mask.shape == (64, 80)
        assert set(np.unique(mask)) == {0, 255}


def test_write_dataset_multi_class_masks_hold_ids(tmp_path):
    spec = SynthSpec(num_classes=4, fg_fraction=0.15)
    pairs = write_dataset(tmp_path, count=4, size=(96, 96), spec=spec)
    values = set().union(*(np.unique(_read(m)).tolist() for _, m in pairs))
    assert values == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("image_format", "channels", "dtype", "shape"),
    [
        ("png", 3, "uint8", (64, 64, 3)),
        ("png", 1, "uint16", (64, 64)),
        ("tif", 4, "uint16", (64, 64, 4)),
        ("jpg", 3, "uint8", (64, 64, 3)),
        ("jpg", 1, "uint8", (64, 64)),
    ],
)
def test_write_dataset_formats_round_trip(tmp_path, image_format, channels, dtype, shape):
    spec = SynthSpec(channels=channels, dtype=dtype)
    [(image_path, _)] = write_dataset(
        tmp_path, count=1, size=(64, 64), spec=spec, image_format=image_format
    )
    assert image_path.suffix == f".{image_format}"
    image = _read(image_path)
    assert image.shape == shape
    assert image.dtype == np.dtype(dtype)


def test_write_dataset_is_byte_identical_for_a_seed(tmp_path):
    def files(folder, seed):
        pairs = write_dataset(folder, count=2, size=(48, 48), seed=seed, image_format="tif")
        return [(i.read_bytes(), m.read_bytes()) for i, m in pairs]

    first, again = files(tmp_path / "a", 5), files(tmp_path / "b", 5)
    other = files(tmp_path / "c", 6)
    assert first == again
    assert first[0][0] != other[0][0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 2}, "channels=2"),
        ({"dtype": "float32"}, "dtype='float32'"),
        ({"fg_fraction": 0.0}, "fg_fraction=0.0"),
        ({"fg_fraction": 1.0}, "fg_fraction=1.0"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"num_classes": 256}, "num_classes=256"),
        ({"height": 0}, "height=0"),
        ({"width": -3}, "width=-3"),
        ({"objects": "stars"}, "objects='stars'"),
        ({"num_classes": 3, "class_shares": (0.5,)}, "one positive share per class"),
        ({"num_classes": 3, "class_shares": (0.5, 0.6)}, "summing to 1"),
    ],
)
def test_synth_pair_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _pair(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_format": "bmp"}, "image_format='bmp'"),
        ({"image_format": "jpg", "dtype": "uint16"}, "dtype='uint16'"),
        ({"image_format": "jpg", "channels": 4}, "channels=4"),
        ({"image_format": "png", "dtype": "uint16", "channels": 3}, "got 3"),
        ({"count": 0}, "count=0"),
        ({"size": (64, 0)}, "width=0"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_write_dataset_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_dataset(tmp_path, **_with_spec(kwargs))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size=0"),
        ({"tile": 500}, "tile=500"),
        ({"channels": 5}, "channels=5"),
        ({"fg_fraction": 2.0}, "fg_fraction=2.0"),
        ({"num_classes": 3}, "num_classes=3"),
    ],
)
def test_write_large_pair_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_large_pair(tmp_path, **_with_spec(kwargs))


def test_write_large_pair_is_tiled_bigtiff_with_matching_mask(tmp_path):
    image_path, mask_path = write_large_pair(tmp_path, size=2048, tile=512, seed=2)
    assert image_path == tmp_path / "images" / "large.tif"
    assert mask_path == tmp_path / "masks" / "large.tif"
    for path in (image_path, mask_path):
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            assert tif.is_bigtiff
            assert page.is_tiled
            assert (page.tilelength, page.tilewidth) == (512, 512)
            assert page.shape == (2048, 2048)
            assert page.compression != 1
    image, mask = tifffile.imread(image_path), tifffile.imread(mask_path)
    assert image.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    assert 0.04 < np.mean(mask > 0) < 0.16
    # The mask belongs to the image: foreground is brighter on average.
    assert image[mask > 0].mean() > image[mask == 0].mean() + 10


def test_write_large_pair_rgb_uncovered_size_and_determinism(tmp_path):
    # A size that is not a multiple of the tile exercises the padded edge tiles.
    rgb = SynthSpec(channels=3)
    first = write_large_pair(tmp_path / "a", size=600, tile=256, spec=rgb, seed=1, name="x")
    again = write_large_pair(tmp_path / "b", size=600, tile=256, spec=rgb, seed=1, name="x")
    assert tifffile.imread(first[0]).shape == (600, 600, 3)
    assert tifffile.imread(first[1]).shape == (600, 600)
    assert first[0].read_bytes() == again[0].read_bytes()
    assert first[1].read_bytes() == again[1].read_bytes()


def test_large_tiles_join_without_a_seam(tmp_path):
    spec = SynthSpec(fg_fraction=0.15)
    _, mask_path = write_large_pair(tmp_path, size=1024, tile=256, spec=spec, seed=3)
    fg = tifffile.imread(mask_path) > 0
    # Objects cross tile borders instead of being cut off at them.
    assert np.sum(fg[:, 255] & fg[:, 256]) > 0
    assert np.sum(fg[511] & fg[512]) > 0


def test_texture_of_a_window_matches_the_whole_image():
    grids = draw_grids(np.random.default_rng(0), (96, 96), 64)
    whole = texture(grids, 0, 0, 96, 96)
    np.testing.assert_allclose(texture(grids, 40, 24, 50, 70), whole[40:90, 24:94], atol=1e-5)
