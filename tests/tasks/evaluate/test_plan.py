"""Evaluation plans: predictions are scored only against the pixels they were made from."""

import numpy as np
import pytest
import zarr

from segflow.tasks.evaluate.plan import plan_evaluation
from segflow.tasks.storage.dataset import open_dataset
from tests.images import make_predictions, make_store


def _stores(tmp_path):
    """Stores A and B: the same sample names, other pixels."""
    a = make_store(tmp_path / "a", count=8, size=64, seed=0)
    b = make_store(tmp_path / "b", count=8, size=64, seed=1)
    return a, b


def _perfect(store, names):
    dataset = open_dataset(store)
    return {n: (np.asarray(dataset.mask(n)) > 0).astype(np.float64)[None] for n in names}


def test_predictions_of_other_pixels_are_refused_naming_the_sample(tmp_path):
    a, b = _stores(tmp_path)
    names = open_dataset(a).samples("test")
    first = names[0]
    out = make_predictions(tmp_path / "of_b.zarr", b, _perfect(b, names))
    ours = open_dataset(a).image(first).attrs["sha256"]
    theirs = open_dataset(b).image(first).attrs["sha256"]
    assert ours != theirs
    with pytest.raises(ValueError) as refused:
        plan_evaluation(str(out), str(a), "test")
    message = str(refused.value)
    assert "\n" not in message
    assert f"of_b.zarr/{first}:" in message and ours in message and theirs in message
    assert "segflow infer" in message
    right = make_predictions(tmp_path / "of_a.zarr", a, _perfect(a, names))
    assert plan_evaluation(str(right), str(a), "test").names == tuple(names)


def test_predictions_without_lineage_are_refused_with_a_hint(tmp_path):
    a, _ = _stores(tmp_path)
    names = open_dataset(a).samples("test")
    out = make_predictions(tmp_path / "old.zarr", a, _perfect(a, names))
    image = zarr.open_group(out / names[1], mode="r+")
    meta = dict(image.attrs["segflow"])
    del meta["lineage"]  # as written before segflow recorded lineage
    image.attrs["segflow"] = meta
    with pytest.raises(ValueError, match=rf"old.zarr/{names[1]}: records no lineage.*infer"):
        plan_evaluation(str(out), str(a), "test")
