"""The prediction store records what each image was predicted from, and resumes only that."""

import hashlib

import numpy as np
import pytest
import zarr

from segflow.tasks.infer.output import input_lineage, prepare_predictions, zarr_sha256
from segflow.tasks.infer.sources import find_sources
from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from tests.images import make_store, save, tiny_bundle

SETTINGS = {"block": 256, "probability_dtype": "uint8"}


@pytest.fixture
def bundle(tmp_path):
    return str(tiny_bundle(tmp_path / "bundle"))


def _lineage(out, name):
    return zarr.open_group(out / name, mode="r").attrs["segflow"]["lineage"]


def test_resuming_from_another_store_is_refused(tmp_path, bundle):
    a = make_store(tmp_path / "a", count=6, size=48, seed=0)
    b = make_store(tmp_path / "b", count=6, size=48, seed=1)  # same names, other pixels
    out = tmp_path / "out.zarr"
    sources, _ = find_sources(str(a), split="test")
    prepare_predictions(sources, str(out), model_uri=bundle, settings=SETTINGS)
    dataset = open_dataset(a)
    name = sources[0].name
    assert _lineage(out, name) == {
        "kind": "store",
        "sha256": dataset.image(name).attrs["sha256"],
        "dataset_sha256": dataset_fingerprint(dataset),
    }
    prepare_predictions(sources, str(out), model_uri=bundle, settings=SETTINGS)  # resumes
    others, _ = find_sources(str(b), split=None)
    with pytest.raises(ValueError, match=r"out.zarr/sample_\d+: predicted from .* would mix"):
        prepare_predictions(others, str(out), model_uri=bundle, settings=SETTINGS)
    assert _lineage(out, name)["sha256"] == dataset.image(name).attrs["sha256"]  # untouched


def test_file_and_zarr_inputs_record_their_checksums(tmp_path, bundle):
    rng = np.random.default_rng(0)
    png = save(tmp_path / "in" / "x.png", rng.integers(0, 255, (40, 50), dtype=np.uint8))
    out = tmp_path / "out.zarr"
    sources, _ = find_sources(str(png))
    prepare_predictions(sources, str(out), model_uri=bundle, settings=SETTINGS)
    assert _lineage(out, "x")["sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
    save(png, rng.integers(0, 255, (40, 50), dtype=np.uint8))  # other pixels, same name
    with pytest.raises(ValueError, match=r"out.zarr/x: predicted from .* would mix"):
        prepare_predictions(
            find_sources(str(png))[0], str(out), model_uri=bundle, settings=SETTINGS
        )

    store = make_store(tmp_path / "s", count=4, size=32)
    sample = open_dataset(store).samples()[0]
    in_store = find_sources(str(store / "images" / sample))[0]
    assert (
        input_lineage(in_store)[sample]["sha256"]
        == open_dataset(store).image(sample).attrs["sha256"]
    )  # an array of a dataset store keeps its source file's checksum
    plain = zarr.create_array(
        tmp_path / "plain.zarr", shape=(32, 32), dtype="uint8", chunks=(16, 16)
    )
    plain[:] = 7
    before = zarr_sha256(str(tmp_path / "plain.zarr"))
    assert zarr_sha256(str(tmp_path / "plain.zarr")) == before
    plain[3, 3] = 8
    assert zarr_sha256(str(tmp_path / "plain.zarr")) != before
