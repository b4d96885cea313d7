"""Tiny image/mask files for tests, written with Pillow and tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def save(path: Path, array: np.ndarray, **tiff_options) -> Path:
    """Write `array` ((H, W) or (H, W, C)) as PNG/JPEG with Pillow or TIFF with tifffile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **tiff_options)
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(array).save(path, quality=95)
    else:
        Image.fromarray(array).save(path)
    return path


def random_image(rng: np.random.Generator, shape: tuple[int, ...], dtype: str = "uint8"):
    """Uniform random pixels over the dtype's range."""
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def random_mask(rng: np.random.Generator, shape: tuple[int, int], values=(0, 255), p=0.2):
    """A mask holding `values[1:]` on about a fraction `p` of pixels."""
    mask = np.full(shape, values[0], dtype=np.uint8)
    fg = rng.random(shape) < p
    mask[fg] = rng.choice(np.asarray(values[1:], dtype=np.uint8), size=int(fg.sum()))
    return mask


def make_source(root: Path, n: int = 6, size=(40, 56), seed: int = 0, empty: int = 0) -> Path:
    """`n` grey PNG pairs with 0/255 masks under root/images and root/masks.

    The last `empty` pairs have all-background masks.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        save(root / "images" / f"s{i:02d}.png", random_image(rng, size))
        mask = random_mask(rng, size) if i < n - empty else np.zeros(size, np.uint8)
        save(root / "masks" / f"s{i:02d}.png", mask)
    return root


def make_store(tmp_path: Path, *, count: int = 8, size: int = 64, seed: int = 0, **synth) -> Path:
    """A small ingested dataset store built from `tasks.synth` data, without Prefect."""
    from tasks.ingest import build_index
    from tasks.pairs import find_pairs
    from tasks.samples import MaskRules, ingest_pair
    from tasks.store import init_store
    from tasks.synth import write_dataset

    num_classes = synth.get("num_classes", 2)
    write_dataset(tmp_path / "src", count=count, size=(size, size), seed=seed, **synth)
    store = tmp_path / "ds.zarr"
    names = ("background",) + tuple(f"class_{i}" for i in range(1, num_classes))
    init_store(store, class_names=names)
    pairs, rejected = find_pairs(tmp_path / "src")
    for pair in pairs:
        ingest_pair(pair, store, rules=MaskRules(num_classes=num_classes), max_pixels=10**9)
    build_index(
        store, rejected=rejected, fractions={"train": 0.5, "val": 0.25, "test": 0.25}, seed=seed
    )
    return store
