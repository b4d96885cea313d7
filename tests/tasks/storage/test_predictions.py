"""The prediction store as viewers read it: pyramid levels, label colours, Zarr throughout."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from segflow.tasks.infer.blocks import predict_blocks
from segflow.tasks.infer.output import build_pyramids, label_instances, prepare_predictions
from segflow.tasks.infer.sources import find_sources
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import (
    OldStoreError,
    check_schema,
    create_image_arrays,
    write_block,
)
from segflow.tasks.storage.pyramid import write_pyramid
from tests.images import save, tiny_bundle
from tests.tasks.infer.test_blocks import settings


def _reference_mean(values: np.ndarray) -> np.ndarray:
    """2x2 mean over the pixels inside the image, computed window by window."""
    c, h, w = values.shape
    out = np.empty((c, -(-h // 2), -(-w // 2)), dtype=values.dtype)
    for y in range(out.shape[1]):
        for x in range(out.shape[2]):
            window = values[:, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].astype(np.float64)
            out[:, y, x] = np.rint(window.mean(axis=(1, 2)))
    return out


def test_pyramid_levels_equal_a_numpy_reference_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    shape, block = (2051, 1303), 512  # odd at every level: 2051x1303, 1026x652, 513x326
    probs = rng.random((2, *shape), dtype=np.float32)
    out = tmp_path / "out.zarr"
    create_image_arrays(
        out,
        "x",
        shape=shape,
        class_names=("background", "a"),
        classes=2,
        block=block,
        probability_dtype="uint8",
        attrs={},
    )
    for y0, y1, x0, x1 in blocks(shape, block):
        write_block(
            out,
            "x",
            (y0, y1, x0, x1),
            probs[:, y0:y1, x0:x1],
            threshold=0.5,
            probability_dtype="uint8",
        )
    assert write_pyramid(out, "x", block) == 2 + 1  # level 1: 2 blocks (652 is one), level 2: 1
    image = zarr.open_group(out / "x", mode="r")
    datasets = image.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [
        [1.0, 1.0, 1.0],
        [1.0, 2.0, 2.0],
        [1.0, 4.0, 4.0],
    ]
    stored, ids = image["0"][...], image["labels/mask/0"][...]
    for level in (1, 2):
        stored, ids = _reference_mean(stored), ids[:, ::2, ::2]
        np.testing.assert_array_equal(image[str(level)][...], stored)
        np.testing.assert_array_equal(image[f"labels/mask/{level}"][...], ids)
    assert image["2"].shape == (2, 513, 326)
    assert write_pyramid(out, "x", block) == 0  # a finished pyramid is not redone
    (out / "x/labels/mask/1/c/0/1/0").unlink()  # a kill before this block's mask shard
    assert write_pyramid(out, "x", block) == 1


@pytest.fixture
def predicted(tmp_path):
    """A prediction store of one 1100x300 image by a tiny model, as `segflow infer` writes."""
    bundle = tiny_bundle(tmp_path / "bundle", class_names=("background", "vessel"))
    png = save(
        tmp_path / "in" / "x.png",
        np.random.default_rng(0).integers(0, 255, (1100, 300), dtype=np.uint8),
    )
    out = tmp_path / "out.zarr"
    sources, _ = find_sources(str(png))
    config = settings(bundle)
    folder, _ = prepare_predictions(
        sources,
        str(out),
        model_uri=str(bundle),
        settings={"block": 256, "probability_dtype": "uint8"},
    )
    config = type(config)(**{**config.__dict__, "bundle": folder})
    predict_blocks(sources, str(out), config, workers=1, dask_address=None, log=lambda _: None)
    build_pyramids(str(out), ["x"], block=256)
    label_instances(str(out), ["x"], min_size=1, block=256)
    return out


def test_opening_the_store_raises_no_zarr_warning(predicted):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        root = zarr.open_group(predicted, mode="r")
        members = dict(root.members(max_depth=None))
    assert "model/segflow_model.json" in members
    assert not [p for p in predicted.rglob("*") if p.is_file() and p.name.endswith(".pt")]


def test_labels_have_colours_and_class_names(predicted):
    label = zarr.open_group(predicted / "x/labels/mask", mode="r").attrs["ome"]["image-label"]
    assert label["colors"][0] == {"label-value": 0, "rgba": [0, 0, 0, 0]}
    assert label["colors"][1]["rgba"][3] == 255
    assert label["properties"] == [
        {"label-value": 0, "class": "background"},
        {"label-value": 1, "class": "vessel"},
    ]


def test_ome_zarr_reads_and_ome_zarr_models_validate_the_store(predicted):
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    models = pytest.importorskip("ome_zarr_models.v05")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nodes = {n.zarr.basename(): n for n in reader.Reader(io.parse_url(str(predicted / "x")))()}
    levels = [(1100, 300), (550, 150)]
    assert [d.shape[1:] for d in nodes["x"].data] == levels
    mask = nodes["mask"]
    assert [d.shape[1:] for d in mask.data] == levels
    assert mask.metadata["color"][0] == [0.0, 0.0, 0.0, 0.0]  # background transparent
    assert mask.metadata["properties"] == {0: {"class": "background"}, 1: {"class": "vessel"}}
    image = models.Image.from_zarr(zarr.open_group(predicted / "x", mode="r"))
    assert [d.path for d in image.ome_attributes.multiscales[0].datasets] == ["0", "1"]
    for name in ("mask", "instances"):
        label = models.ImageLabel.from_zarr(zarr.open_group(predicted / f"x/labels/{name}"))
        assert len(label.ome_attributes.multiscales[0].datasets) == 2
    labels = models.Labels.from_zarr(zarr.open_group(predicted / "x/labels", mode="r"))
    assert sorted(labels.ome_attributes.labels) == ["instances", "mask"]


def test_instance_levels_are_the_nearest_pixels_of_level_0(predicted):
    instances = zarr.open_group(predicted / "x/labels/instances", mode="r")
    np.testing.assert_array_equal(instances["1"][...], instances["0"][:, ::2, ::2])


def test_a_store_of_an_older_schema_is_refused_before_anything_is_written(predicted):
    root = zarr.open_group(predicted, mode="r+")
    root.attrs["segflow"] = dict(root.attrs["segflow"]) | {"schema_version": 2}
    before = sorted(p for p in predicted.rglob("*"))
    with pytest.raises(OldStoreError, match=r"out.zarr: a prediction store of schema 2, .* new"):
        check_schema(predicted)
    assert sorted(p for p in predicted.rglob("*")) == before


def _create(out, name="im"):
    create_image_arrays(
        out,
        name,
        shape=(300, 200),
        class_names=["background", "fg"],
        classes=1,
        block=256,
        probability_dtype="uint8",
        attrs={},
    )


@pytest.mark.parametrize("cut", ["building", "sending"])
def test_an_image_cut_short_while_created_is_not_there_and_a_rerun_creates_it(
    tmp_path, monkeypatch, cut
):
    """A writer killed while creating an image's arrays (in the CI, a KeyError on the rerun)."""
    from segflow.tasks.storage import predictions, staging

    out = tmp_path / "out.zarr"
    zarr.open_group(out, mode="w", zarr_format=3)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    if cut == "building":  # after the first array
        first = predictions._level_array
        made = []

        def level_array(*args, **kwargs):
            if made:
                killed()
            made.append(first(*args, **kwargs))
            return made[-1]

        monkeypatch.setattr(predictions, "_level_array", level_array)
    else:  # every document but the image group's written
        monkeypatch.setattr(staging, "os", SimpleNamespace(replace=killed))
    with pytest.raises(KeyboardInterrupt):
        _create(out)
    monkeypatch.undo()
    assert "im" not in zarr.open_group(out, mode="r")
    _create(out)
    image = zarr.open_group(out / "im", mode="r")
    assert image["0"].shape == (1, 300, 200)
    assert image["labels/mask/0"].shape == (1, 300, 200)


def test_an_image_left_without_arrays_by_an_earlier_version_is_built_again(tmp_path):
    out = tmp_path / "out.zarr"
    zarr.open_group(out, mode="w", zarr_format=3).create_group("im")  # what a kill left
    _create(out)
    assert zarr.open_group(out / "im", mode="r")["labels/mask/0"].shape == (1, 300, 200)
