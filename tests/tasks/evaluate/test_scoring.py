"""Streaming evaluation: exact against scikit-learn on the same pixels, any chunking."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, log_loss, precision_score, recall_score

from segflow.tasks.evaluate.blocks import (
    IN_PROCESS_PIXELS,
    default_evaluation_workers,
    score_blocks,
)
from segflow.tasks.evaluate.plan import plan_evaluation
from segflow.tasks.evaluate.scoring import THRESHOLDS
from segflow.tasks.storage.dataset import open_dataset
from tests.images import make_predictions, make_store, noisy_probabilities


def _stored(p: np.ndarray, dtype: str) -> np.ndarray:
    """What the prediction store holds, as float64 probabilities."""
    if dtype == "uint8":
        return np.rint(np.clip(p, 0, 1) * 255) / 255
    return p.astype(np.float16).astype(np.float64)


def _setup(tmp_path, *, num_classes=2, dtype="uint8", size=400, count=8):
    store = make_store(tmp_path, count=count, size=size, num_classes=num_classes, fg_fraction=0.1)
    dataset = open_dataset(store)
    rng = np.random.default_rng(5)
    truths = {n: np.asarray(dataset.mask(n)) for n in dataset.samples("test")}
    probs = {n: noisy_probabilities(rng, t, num_classes) for n, t in truths.items()}
    out = make_predictions(tmp_path / "pred.zarr", store, probs, dtype=dtype, block=256)
    return store, out, truths, probs


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_binary_scores_equal_sklearn(tmp_path, dtype):
    store, out, truths, probs = _setup(tmp_path, dtype=dtype)
    plan = plan_evaluation(str(out), str(store), "test")
    assert len(plan.jobs) == 4 * len(truths)  # 400² in 256² blocks: partial edge blocks
    result = score_blocks(plan, workers=1, dask_address=None)
    masks = {n: (probs[n][0] >= 0.5).astype(np.uint8) for n in truths}
    stored = {n: np.clip(_stored(probs[n][0], dtype), 1e-7, 1 - 1e-7) for n in truths}
    for name, truth in truths.items():
        got = result.images[name]
        t, m = truth.ravel(), masks[name].ravel()
        assert got.dice == pytest.approx(f1_score(t, m, zero_division=1.0), abs=1e-9)
        assert got.iou == pytest.approx(jaccard_score(t, m, zero_division=1.0), abs=1e-9)
        assert got.bce == pytest.approx(log_loss(t, stored[name].ravel(), labels=[0, 1]), abs=1e-9)
    t = np.concatenate([truths[n].ravel() for n in truths])
    m = np.concatenate([masks[n].ravel() for n in truths])
    p = np.concatenate([stored[n].ravel() for n in truths])
    pooled = result.pooled
    assert pooled.pixels == t.size
    assert pooled.dice == pytest.approx(f1_score(t, m), abs=1e-9)
    assert pooled.iou == pytest.approx(jaccard_score(t, m), abs=1e-9)
    assert pooled.precision == pytest.approx(precision_score(t, m), abs=1e-9)
    assert pooled.recall == pytest.approx(recall_score(t, m), abs=1e-9)
    assert pooled.bce == pytest.approx(log_loss(t, p, labels=[0, 1]), abs=1e-9)
    assert 0.3 < pooled.dice < 0.99  # the noisy predictions are neither useless nor perfect
    for threshold in (0.2, 0.5, 0.77):
        i = int(np.flatnonzero(np.isclose(THRESHOLDS, threshold))[0])
        expected = f1_score(t, p >= threshold)
        assert result.sweep["class_1"][i] == pytest.approx(expected, abs=1e-9)


def test_multiclass_per_class_scores_and_cross_entropy(tmp_path):
    store, out, truths, probs = _setup(tmp_path, num_classes=3, dtype="float16", size=200)
    result = score_blocks(
        plan_evaluation(str(out), str(store), "test"), workers=1, dask_address=None
    )
    t = np.concatenate([truths[n].ravel() for n in truths])
    stored = np.concatenate([_stored(probs[n], "float16").reshape(3, -1) for n in truths], axis=1)
    m = np.concatenate([probs[n].argmax(0).ravel() for n in truths])  # as infer stores it
    f1 = f1_score(t, m, average=None, labels=[0, 1, 2], zero_division=1.0)
    iou = jaccard_score(t, m, average=None, labels=[0, 1, 2], zero_division=1.0)
    per_class = result.pooled.per_class
    assert [per_class[c]["dice"] for c in ("background", "class_1", "class_2")] == pytest.approx(
        f1, abs=1e-9
    )
    assert [per_class[c]["iou"] for c in ("background", "class_1", "class_2")] == pytest.approx(
        iou, abs=1e-9
    )
    assert result.pooled.dice == pytest.approx(f1[1:].mean(), abs=1e-9)
    expected_ce = -np.log(np.clip(stored[t, np.arange(t.size)], 1e-7, 1 - 1e-7)).mean()
    assert result.pooled.bce == pytest.approx(expected_ce, abs=1e-9)
    assert set(result.sweep) == {"class_1", "class_2"}


def test_dask_workers_give_identical_results(tmp_path):
    store, out, _, _ = _setup(tmp_path)
    plan = plan_evaluation(str(out), str(store), "test")
    alone = score_blocks(plan, workers=1, dask_address=None)
    parallel = score_blocks(plan, workers=2, dask_address=None)
    assert parallel.pooled == alone.pooled
    assert parallel.images == alone.images
    assert parallel.sweep == alone.sweep
    assert default_evaluation_workers(plan, cores=8) == 1  # small: no cluster start-up
    pixels = sum(s.pixels for s in alone.images.values())
    big = IN_PROCESS_PIXELS // pixels + 1
    huge = replace(plan, names=plan.names * big, regions=plan.regions)
    assert default_evaluation_workers(huge, cores=8) == 8


def test_missing_and_incomplete_predictions_are_named(tmp_path):
    store, out, truths, probs = _setup(tmp_path)
    with pytest.raises(ValueError, match=r"no predictions for \d+ of \d+ samples.*segflow infer"):
        plan_evaluation(str(out), str(store), None)
    name = sorted(truths)[0]
    # an interrupted inference: one block's shards never written
    (out / name / "labels/mask/0/c/0/1/1").unlink()
    with pytest.raises(ValueError, match=rf"{name}: 1 of 4 blocks not written"):
        plan_evaluation(str(out), str(store), "test")


def test_other_classes_are_refused(tmp_path):
    store, _, truths, probs = _setup(tmp_path)
    other = make_store(tmp_path / "other", count=8, size=400, num_classes=3)
    out = make_predictions(tmp_path / "p3.zarr", other, {n: probs[n] for n in truths})
    with pytest.raises(ValueError, match="classes"):
        plan_evaluation(str(out), str(store), "test")


def test_dedicated_model_is_scored_on_its_class(tmp_path):
    store = make_store(tmp_path, count=8, size=128, num_classes=3, fg_fraction=0.2)
    dataset = open_dataset(store)
    truths = {n: np.asarray(dataset.mask(n)) for n in dataset.samples("test")}
    # a perfect binary model of class 2
    probs = {n: (t == 2).astype(np.float64)[None] for n, t in truths.items()}
    out = make_predictions(tmp_path / "pred.zarr", store, probs, binary_class=2)
    result = score_blocks(
        plan_evaluation(str(out), str(store), "test"), workers=1, dask_address=None
    )
    assert result.plan.layout.class_names == ("not class_2", "class_2")
    assert result.pooled.dice == 1.0
    assert result.pooled.bce == pytest.approx(-np.log(1 - 1e-7))
