"""Instance labels block by block equal the whole-image labelling, objects for objects."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage import measure, morphology

from segflow.tasks.storage.grid import pieces
from segflow.tasks.storage.instances import label_blocks
from segflow.tasks.storage.predictions import create_image_arrays, write_instances


def reference(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Whole-image labels of a ``(H, W)`` mask: 8-connected objects of >= `min_size` px."""
    kept = morphology.remove_small_objects(mask > 0, max_size=max(0, min_size - 1), connectivity=2)
    return measure.label(kept, connectivity=2)


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images split the pixels into the same objects (ids may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == np.unique(a[a > 0]).size == np.unique(b[b > 0]).size


def straddling_mask(shape: tuple[int, int], block: int, seed: int = 0) -> np.ndarray:
    """Random small objects (some crossing borders) plus, at every block border, a bar across
    it, and at every inner block corner a touch along one diagonal only (both kinds)."""
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < 0.3).astype(np.uint8)
    ys, xs = [a for a, _ in pieces(shape[0], block)], [a for a, _ in pieces(shape[1], block)]
    for iy, y in enumerate(ys[1:]):
        for ix, x in enumerate(xs[1:]):
            mask[y - 3 : y + 3, x - 3 : x + 3] = 0
            if (iy + ix) % 2:
                mask[y - 1, x - 1] = mask[y, x] = 2  # down-right diagonal only
            else:
                mask[y - 1, x] = mask[y, x - 1] = 1  # down-left diagonal only
        for x in xs:
            mask[y - 4 : y + 4, x + 10] = 1  # a bar across the horizontal border
    for x in xs[1:]:
        mask[5, x - 4 : x + 4] = 1
    return mask


@pytest.mark.parametrize("min_size", [0, 1, 3, 8, 40])
def test_blocks_give_the_whole_image_objects(min_size):
    block = 64
    mask = straddling_mask((300, 260), block)  # blocks of 64, 44 and 68 px
    labels = np.zeros((1, *mask.shape), dtype=np.uint32)
    count = label_blocks(mask[None], labels, min_size=min_size, block=block)
    expected = reference(mask, min_size)
    assert same_objects(labels[0], expected)
    assert count == expected.max()
    np.testing.assert_array_equal(np.unique(labels), np.arange(count + 1))  # ids 1..n


def test_an_object_split_across_blocks_is_measured_whole():
    mask = np.zeros((1, 128, 128), dtype=np.uint8)  # 4 blocks of 64
    mask[0, 60:68, 63] = 1  # 8 px: 4 top-left, 4 bottom-left
    mask[0, 59, 64:67] = 1  # 3 px top-right, touching (60, 63) diagonally
    mask[0, 68, 64] = 1  # 1 px bottom-right, touching (67, 63) diagonally
    mask[0, 100, 10] = 1  # alone: dropped
    labels = np.zeros(mask.shape, dtype=np.uint32)
    assert label_blocks(mask, labels, min_size=12, block=64) == 1
    assert (labels[0] == 1).sum() == 12
    assert label_blocks(mask, labels, min_size=13, block=64) == 0
    assert not labels.any()


def test_the_store_holds_block_labels_and_their_levels(tmp_path):
    shape, block = (1300, 600), 256
    mask = straddling_mask(shape, block, seed=1)
    out = tmp_path / "out.zarr"
    create_image_arrays(
        out,
        "x",
        shape=shape,
        class_names=("background", "a", "b"),
        classes=3,
        block=block,
        probability_dtype="uint8",
        attrs={},
    )
    zarr.open_array(out / "x/labels/mask/0", mode="r+")[0] = mask
    count = write_instances(out, "x", min_size=2, block=block)
    instances = zarr.open_group(out / "x/labels/instances", mode="r")
    assert same_objects(instances["0"][0], reference(mask, 2))
    assert count == instances["0"][...].max()
    assert instances["0"].dtype == np.uint32
    np.testing.assert_array_equal(instances["1"][...], instances["0"][:, ::2, ::2])
