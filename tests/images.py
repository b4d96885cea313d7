"""Tiny image/mask files for tests, written with Pillow and tifffile."""

from __future__ import annotations

import struct
import zlib
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
    """A small ingested dataset store built from `segflow.tasks.demo.synth` data, without
    Prefect; `synth` holds :class:`~segflow.tasks.demo.synth.SynthSpec` fields."""
    from segflow.tasks.demo.synth import SynthSpec, write_dataset
    from segflow.tasks.ingest.index import build_index
    from segflow.tasks.ingest.masks import MaskRules
    from segflow.tasks.ingest.pairs import PairLayout, find_pairs
    from segflow.tasks.ingest.samples import SampleChecks, ingest_pair
    from segflow.tasks.storage.dataset_writer import init_store
    from segflow.tasks.storage.image_io import SizeLimits

    spec = SynthSpec(**synth)
    num_classes = spec.num_classes
    write_dataset(tmp_path / "src", count=count, size=(size, size), spec=spec, seed=seed)
    store = tmp_path / "ds.zarr"
    names = ("background",) + tuple(f"class_{i}" for i in range(1, num_classes))
    init_store(store, class_names=names)
    pairs, rejected = find_pairs(tmp_path / "src", PairLayout("images", "masks", ""))
    rules = MaskRules(num_classes=num_classes, foreground_value=None, invert=False)
    for pair in pairs:
        ingest_pair(pair, store, rules=rules, checks=SampleChecks(SizeLimits(10**9, 10**9), None))
    build_index(
        store, rejected=rejected, fractions={"train": 0.5, "val": 0.25, "test": 0.25}, seed=seed
    )
    return store


def make_predictions(
    out: Path,
    store: Path,
    probs: dict[str, np.ndarray],
    *,
    dtype: str = "uint8",
    block: int = 256,
    threshold: float = 0.5,
    binary_class: int | None = None,
    model: dict | None = None,
) -> Path:
    """A prediction store holding the given ``(K, H, W)`` probabilities per sample, written as
    `segflow infer` writes them (block by block, each image predicted from `store`'s image of
    its name), without a model."""
    import zarr

    from segflow.tasks.storage.dataset import open_dataset
    from segflow.tasks.storage.grid import blocks
    from segflow.tasks.storage.predictions import create_image_arrays, write_block

    dataset = open_dataset(store)
    root = zarr.open_group(out, mode="a")
    root.attrs["segflow"] = {
        "kind": "predictions",
        "class_names": dataset.class_names,
        "binary_class": binary_class,
        "settings": {"probability_dtype": dtype, "block": block, "threshold": threshold},
        "model_uri": (model or {}).get("uri", "test"),
        "model": model,
    }
    for name, p in probs.items():
        create_image_arrays(
            out,
            name,
            shape=p.shape[1:],
            class_names=dataset.class_names,
            classes=p.shape[0],
            block=block,
            probability_dtype=dtype,
            attrs={"lineage": {"kind": "store", "sha256": dataset.image(name).attrs["sha256"]}},
        )
        for y0, y1, x0, x1 in blocks(p.shape[1:], block):
            write_block(
                out,
                name,
                (y0, y1, x0, x1),
                p[:, y0:y1, x0:x1],
                threshold=threshold,
                probability_dtype=dtype,
            )
    return out


def noisy_probabilities(
    rng: np.random.Generator, truth: np.ndarray, num_classes: int, noise: float = 0.6
) -> np.ndarray:
    """Probabilities that mostly agree with `truth`: one channel for binary, else K (softmax)."""
    onehot = np.eye(num_classes)[truth].transpose(2, 0, 1)
    logits = 4 * onehot + noise * 4 * rng.standard_normal(onehot.shape)
    if num_classes == 2:
        return 1 / (1 + np.exp(-(logits[1] - logits[0])))[None]
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


# --- headers declaring huge images in files of a few hundred bytes (decompression bombs) ----


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def crafted_png(path: Path, height: int, width: int, channels: int = 1) -> Path:
    """A valid PNG header declaring `height` x `width` 8-bit pixels, with a few bytes of data."""
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )
    return path


def crafted_jpeg(path: Path, height: int, width: int) -> Path:
    """A 16x16 grey JPEG whose frame header (SOF0) says `height` x `width` (at most 65535)."""
    save(path, np.zeros((16, 16), np.uint8))
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def crafted_tiff(path: Path, height: int, width: int, *, tiled: bool) -> Path:
    """A 16x16 grey TIFF (tiled or one strip) whose ImageLength/ImageWidth tags are rewritten to
    `height` x `width`."""
    options = {"tile": (16, 16)} if tiled else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), metadata=None, **options)
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        fields = [
            (tags[name].valueoffset, tags[name].dtype) for name in ("ImageWidth", "ImageLength")
        ]
        order = tif.byteorder
    with open(path, "r+b") as f:
        for (offset, dtype), value in zip(fields, (width, height), strict=True):
            f.seek(offset)
            f.write(struct.pack(order + {3: "H", 4: "I", 16: "Q"}[int(dtype)], value))
    return path


def tiny_bundle(
    path: Path,
    *,
    seed: int | None = None,
    head_scale: float = 1.0,
    head_bias: float | None = None,
    class_names: tuple[str, str] = ("background", "fg"),
    metadata: dict | None = None,
) -> Path:
    """A saved bundle of a tiny untrained binary U-Net for 1-channel uint8 images (depth 2,
    base 4, mean 100, std 50). `head_scale` sharpens its logits (confident outputs, as a trained
    model gives: thresholds are stable); `head_bias` fixes the head's bias (-100: predicts
    nothing)."""
    import torch

    from segflow.models.unet import build_unet
    from segflow.tasks.storage.bundle import save_bundle

    if seed is not None:
        torch.manual_seed(seed)
    model = build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4).eval()
    with torch.no_grad():
        model.head.weight.mul_(head_scale)
        if head_bias is not None:
            model.head.bias.fill_(head_bias)
    return save_bundle(
        path,
        config=model.config,
        state_dicts=[model.state_dict()],
        mean=(100.0,),
        std=(50.0,),
        class_names=class_names,
        metadata=metadata,
    )
