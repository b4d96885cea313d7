"""The prediction store: per image, probabilities and a class-id mask, as OME-Zarr (NGFF 0.5).

Layout (Zarr v3)::

    OUT/zarr.json                     attributes["segflow"]: model URI, settings, classes, images
    OUT/model/<file>                  the model bundle, one 1-D uint8 array per file
                                      (segflow.tasks.storage.stored_bundle)
    OUT/<image>/                      NGFF image: multiscales, axes c, y, x; attributes["segflow"]
                                      ["lineage"]: the sha256 of the pixels it was predicted from
    OUT/<image>/0                     (K, H, W) probabilities, uint8 (p * 255, rounded) or float16
    OUT/<image>/1, 2, ...             the pyramid: each level half the one above (rounded up),
                                      down to PYRAMID_MIN_SIDE px (segflow.tasks.storage.pyramid)
    OUT/<image>/labels/mask/0, 1, ... (1, H, W) uint8 class ids (NGFF label image, same levels),
                                      with a colour and the class name of every id

Arrays are written block by block; a block is one or more whole shards of every array (a
remainder shorter than half a block joins the last block of its axis), so parallel writers never
share a shard, and a block is done exactly when its shards exist (resume). Every shard is written,
an all-background one included, so that being done does not depend on what was predicted.
An image's documents are built in memory and sent, its group's last, so that an image exists
only with all its arrays.

On object storage (a URL) nothing is written in place (zarr would read each shard back first):
a block's shards are encoded in memory and sent whole, the mask's last
(:mod:`segflow.tasks.storage.staging`).

The store's whole layout is written here, hence a module of ~300 lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from segflow.tasks.storage.instances import label_blocks, write_nearest_levels
from segflow.tasks.storage.levels import LevelArrays, open_level, writable
from segflow.tasks.storage.ngff import NGFF_VERSION, image_label, level_shapes, multiscales
from segflow.tasks.storage.staging import memory_group, send_documents, staged
from segflow.tasks.storage.urls import exists, is_remote, open_group

# 2: each image records its lineage, and all-background shards are written.
# 3: pyramid levels, label colours and names, the model bundle as Zarr arrays.
PREDICTIONS_SCHEMA_VERSION = 3


PREDICTION_CHUNK = 512  # inner chunk side; 256 where the block is not a multiple of 512


ProbabilityDtype = Literal["uint8", "float16"]


_COMPRESSORS = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def chunk_side(block: int) -> int:
    """Inner chunk side for `block`² shards: 512 where it divides the block, else 256 (a 2048²
    block of probabilities and mask: 55 ms to encode and write in 256² chunks, 36 ms in 512²;
    benchmarks/predictions_write.py)."""
    return PREDICTION_CHUNK if block % PREDICTION_CHUNK == 0 else 256


def create_image_arrays(
    out: str | Path,
    name: str,
    *,
    shape: tuple[int, int],
    class_names: Sequence[str],
    classes: int,
    block: int,
    probability_dtype: ProbabilityDtype,
    attrs: Mapping[str, Any],
) -> None:
    """Create (or keep, when compatible) the arrays of one image, every pyramid level of the
    probabilities and of the class-id mask (labelled with `class_names`); data is written
    later. The image's documents are built in memory and sent, its group's last.

    Raises
    ------
    ValueError
        An existing image of that name with another shape, classes or block size.
    """
    root = open_group(out, mode="a")
    height, width = shape
    existing = _whole_image(root, name)
    if existing is not None:
        if existing.shape != (classes, height, width) or existing.shards[1] != block:
            raise ValueError(
                f"{out}/{name}: holds {existing.shape} in {existing.shards} blocks, not "
                f"{(classes, height, width)} in {block}² blocks; write to a new output"
            )
        return
    # Built in memory and sent, its group's document last: a writer killed on the way leaves
    # no group (which a rerun would take for a whole image), on a disk as on object storage.
    documents: dict[str, Any] = {}
    parent = memory_group(documents)
    levels = level_shapes(shape)
    image = parent.create_group(
        name, attributes={"ome": multiscales(name, len(levels)), "segflow": dict(attrs)}
    )
    for level, level_shape in enumerate(levels):
        _level_array(image, str(level), (classes, *level_shape), block, probability_dtype)
    labels = image.create_group(
        "labels", attributes={"ome": {"version": NGFF_VERSION, "labels": ["mask"]}}
    )
    _label_image(labels, "mask", levels, block, "uint8", image_label(class_names))
    send_documents(out, name, documents)


def _whole_image(root: zarr.Group, name: str) -> zarr.Array | None:
    """Level 0 of the probabilities of image `name`, or None where the image is absent or was
    left without its arrays (a writer killed before images were sent whole, their group last):
    that one is built again."""
    try:
        image = root[name]
        _ = image["labels/mask/0"]
        return image["0"]
    except KeyError:
        return None


def _level_array(
    group: zarr.Group, path: str, shape: tuple[int, int, int], block: int, dtype: str
) -> zarr.Array:
    """A (C, H, W) array in `block`² shards, replacing any earlier one at `path`."""
    array = group.create_array(
        path,
        shape=shape,
        dtype=dtype,
        chunks=(shape[0], chunk_side(block), chunk_side(block)),
        shards=(shape[0], block, block),
        compressors=_COMPRESSORS,
        dimension_names=("c", "y", "x"),
        fill_value=0,
        overwrite=True,
    )
    return writable(array)


def _label_image(
    labels: zarr.Group,
    name: str,
    levels: list[tuple[int, int]],
    block: int,
    dtype: str,
    label_meta: dict[str, Any],
) -> list[zarr.Array]:
    """An NGFF label image ``labels/<name>/<level>`` of shape (1, H, W) per level, replacing
    any earlier one."""
    group = labels.require_group(name)
    group.attrs["ome"] = multiscales(name, len(levels)) | {"image-label": label_meta}
    return [
        _level_array(group, str(level), (1, *shape), block, dtype)
        for level, shape in enumerate(levels)
    ]


def block_done(
    out: str | Path, name: str, region: tuple[int, int, int, int], block: int, level: int = 0
) -> bool:
    """Whether every shard of `region` of pyramid `level`, in both arrays, is stored (shard
    files, and objects, are written whole, whatever they hold)."""
    y0, y1, x0, x1 = region
    return all(
        exists(out, f"{name}/{arr}/c/0/{iy}/{ix}")
        for arr in (str(level), f"labels/mask/{level}")
        for iy in range(y0 // block, -(-y1 // block))
        for ix in range(x0 // block, -(-x1 // block))
    )


class OldStoreError(ValueError):
    """A prediction store written in an older layout; the message (one line) says to write
    to a new output."""


def check_schema(out: str | Path) -> None:
    """Refuse to resume a prediction store of another schema version (a missing store passes).

    Raises
    ------
    OldStoreError
        `out` holds predictions of another ``schema_version``.
    """
    if not exists(out, "zarr.json"):
        return
    version = open_group(out).attrs.get("segflow", {}).get("schema_version")
    if version not in (None, PREDICTIONS_SCHEMA_VERSION):
        raise OldStoreError(
            f"{out}: a prediction store of schema {version}, this segflow writes schema "
            f"{PREDICTIONS_SCHEMA_VERSION} (pyramids, the model as Zarr arrays); write to a new "
            "output"
        )


class LineageError(ValueError):
    """Predictions and the pixels they are to be scored against, or resumed from, differ;
    the message (one line) names the image and both checksums."""


def recorded_lineage(root: zarr.Group, name: str) -> dict[str, Any] | None:
    """What image `name` of the prediction store `root` was predicted from: ``kind`` (store,
    file or zarr), ``sha256`` of the input image and, for a dataset store input, that store's
    ``dataset_sha256``; None for an image written before segflow recorded lineage."""
    return root[name].attrs.get("segflow", {}).get("lineage")


def check_lineage(out: str | Path, lineage: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to resume images of `out` from other pixels than they were predicted from.

    `lineage` maps each image about to be predicted to the lineage of its input (see
    :func:`recorded_lineage`); images not yet in `out` pass.

    Raises
    ------
    LineageError
        An image of `out` predicted from an image with another sha256, or with no lineage
        recorded: resuming it would mix data.
    """
    if not exists(out, "zarr.json"):
        return
    root = open_group(out)
    for name, new in lineage.items():
        if name not in root:
            continue
        old = recorded_lineage(root, name)
        if old is None:
            raise LineageError(
                f"{out}/{name}: written before segflow recorded which image it was predicted "
                "from, so resuming could mix data; write to a new output"
            )
        if old["sha256"] != new["sha256"]:
            raise LineageError(
                f"{out}/{name}: predicted from an image with sha256 {old['sha256']}, this input "
                f"has sha256 {new['sha256']}; resuming would mix data: write to a new output"
            )


def to_stored(probs: np.ndarray, dtype: ProbabilityDtype) -> np.ndarray:
    """Probabilities in [0, 1] as stored: uint8 ``round(p * 255)`` or float16."""
    if dtype == "uint8":
        return np.rint(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
    return probs.astype(np.float16)


def class_ids(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``(K, h, w)`` probabilities -> ``(h, w)`` uint8 ids: ``p >= threshold`` for one channel,
    argmax otherwise."""
    if probs.shape[0] == 1:
        return (probs[0] >= threshold).astype(np.uint8)
    return probs.argmax(0).astype(np.uint8)


def write_block(
    out: str | Path,
    name: str,
    region: tuple[int, int, int, int],
    probs: np.ndarray,
    *,
    threshold: float,
    probability_dtype: ProbabilityDtype,
    arrays: LevelArrays | None = None,
) -> None:
    """Write one block's probabilities, then its mask (the mask shard marks it done).

    `arrays`: the image's level 0 (:func:`open_level`), opened once for all its blocks;
    None opens it here.
    """
    y0, y1, x0, x1 = region
    arrays = arrays or open_level(out, name)
    arrays.probs[:, y0:y1, x0:x1] = to_stored(probs, probability_dtype)
    arrays.mask[0, y0:y1, x0:x1] = class_ids(probs, threshold)


def write_instances(out: str | Path, name: str, *, min_size: int, block: int) -> int:
    """Label the 8-connected foreground components of an image's mask block by block, drop
    those smaller than `min_size` pixels (measured whole across blocks), and store them as the
    NGFF label ``instances`` (uint32, ids 1..n), with the mask's pyramid levels (nearest pixel)
    (see :mod:`segflow.tasks.storage.instances`: memory holds a few blocks, whatever the size).

    Returns the number of objects.
    """
    image = open_group(out, name, mode="r+")
    mask = image["labels/mask/0"]
    labels_group = image["labels"]
    meta = {"version": NGFF_VERSION, "source": {"image": "../../"}}
    shapes = level_shapes(mask.shape[1:])
    if is_remote(out):
        # Built in memory and sent; the arrays built are then staged at their remote paths.
        documents: dict[str, Any] = {}
        built = memory_group(documents).require_group(f"{name}/labels")
        levels = _label_image(built, "instances", shapes, block, "uint32", meta)
        send_documents(str(out), f"{name}/labels/instances", documents)
    else:
        levels = _label_image(labels_group, "instances", shapes, block, "uint32", meta)
    levels = [staged(level, out) for level in levels]
    objects = label_blocks(staged(mask, out), levels[0], min_size=min_size, block=block)
    write_nearest_levels(levels, block)
    ome = dict(labels_group.attrs["ome"])
    ome["labels"] = sorted(set(ome["labels"]) | {"instances"})
    labels_group.attrs["ome"] = ome
    return objects
