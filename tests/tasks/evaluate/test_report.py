"""What the evaluate stage hands to MLflow: names, keys, steps and panels."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from segflow.tasks.evaluate.blocks import score_blocks
from segflow.tasks.evaluate.plan import evaluation_key, plan_evaluation
from segflow.tasks.evaluate.report import evaluation_run, overlay_panels, report
from segflow.tasks.evaluate.scoring import THRESHOLDS
from segflow.tasks.storage.dataset import dataset_fingerprint, open_dataset
from tests.images import make_predictions, make_store, noisy_probabilities

MODEL = {"uri": "models:/unet/3", "run_id": "r1", "name": "unet", "version": "3"}


@pytest.fixture
def evaluation(tmp_path):
    """A dedicated model of class 2 of a 3-class store: its classes are named with a space."""
    store = make_store(tmp_path, count=8, size=64, num_classes=3, fg_fraction=0.2)
    dataset = open_dataset(store)
    rng = np.random.default_rng(1)
    probs = {
        n: noisy_probabilities(rng, (np.asarray(dataset.mask(n)) == 2).astype(int), 2)
        for n in dataset.samples("test")
    }
    out = make_predictions(tmp_path / "p.zarr", store, probs, binary_class=2, model=MODEL)
    return score_blocks(plan_evaluation(str(out), str(store), "test"), workers=1, dask_address=None)


def test_run_names_metrics_by_split_and_class(evaluation):
    run = evaluation_run(evaluation, flow_run_id="f1")
    pooled = evaluation.pooled
    assert run.name == "evaluate-test-unet/3"
    assert (run.model.run_id, run.model.version) == ("r1", "3")
    assert run.tags["segflow.model_version"] == "unet/3"
    assert run.tags["segflow.model_uri"] == "models:/unet/3"
    assert run.tags["prefect.flow_run_id"] == "f1"
    params = {"split": "test", "images": len(evaluation.images), "threshold": 0.5}
    assert run.params.items() >= params.items()
    metrics = ("bce", "dice", "iou", "precision", "recall")
    classes = ("not_class_2", "class_2")  # "not class_2": MLflow keys hold no spaces
    expected = {f"test/{m}" for m in metrics}
    expected |= {f"test/{m}.{c}" for m in ("dice", "iou", "precision", "recall") for c in classes}
    assert set(run.metrics) == expected
    trivial = pooled.trivial_dice["all_foreground"]
    assert run.params["trivial_dice.all_foreground"] == pytest.approx(trivial, abs=1e-6)
    assert run.metrics["test/dice"] == pooled.dice
    assert run.metrics["test/iou.not_class_2"] == pooled.per_class["not class_2"]["iou"]
    steps = run.sweep["test/sweep_dice.class_2"]
    assert list(steps) == list(range(1, 100))
    assert steps[77] == evaluation.sweep["class_2"][int(np.flatnonzero(THRESHOLDS == 0.77)[0])]
    assert run.dice == pooled.dice
    fingerprint = dataset_fingerprint(open_dataset(evaluation.plan.store))
    assert run.key == evaluation_key(fingerprint, "test")


def test_overlays_are_the_worst_and_best_images(evaluation):
    ranked = sorted(evaluation.images, key=lambda n: evaluation.images[n].dice)
    panels = overlay_panels(evaluation, 1)
    assert set(panels) == {f"worst_{ranked[0]}", f"best_{ranked[-1]}"}
    # 64-px images, enlarged 8x to 512 px: image | truth and prediction, under a legend strip.
    assert all(p.shape == (28 + 512, 2 * 512, 3) and p.dtype == np.uint8 for p in panels.values())


def test_trivial_baselines_are_the_constant_predictors_on_the_evaluated_pixels(evaluation):
    """Brute force: the Dice of a mask of all background and of all class 2 on the test images."""
    dataset = open_dataset(evaluation.plan.store)
    truths = {n: np.asarray(dataset.mask(n)) == 2 for n in evaluation.images}
    everything = np.concatenate([t.ravel() for t in truths.values()])
    p, n = int(everything.sum()), everything.size
    assert p > 0
    assert evaluation.pooled.trivial_dice == {
        "all_background": 0.0,
        "all_foreground": pytest.approx(f1_score(everything, np.ones(n, bool)), rel=1e-12),
    }
    assert evaluation.pooled.trivial_dice["all_foreground"] == pytest.approx(2 * p / (p + n))
    for name, truth in truths.items():
        expected = f1_score(truth.ravel(), np.ones(truth.size, bool), zero_division=1.0)
        assert evaluation.images[name].trivial_dice["all_foreground"] == pytest.approx(expected)
    assert report(evaluation)["pooled"]["trivial_dice"] == evaluation.pooled.trivial_dice


def test_multi_class_baselines_name_each_class(tmp_path):
    store = make_store(tmp_path, count=8, size=64, num_classes=3, fg_fraction=0.2)
    dataset = open_dataset(store)
    rng = np.random.default_rng(2)
    names = dataset.samples("test")
    probs = {n: noisy_probabilities(rng, np.asarray(dataset.mask(n)), 3) for n in names}
    out = make_predictions(tmp_path / "p.zarr", store, probs)
    plan = plan_evaluation(str(out), str(store), "test")
    pooled = score_blocks(plan, workers=1, dask_address=None).pooled
    truth = np.concatenate([np.asarray(dataset.mask(n)).ravel() for n in names])
    for c, name in enumerate(dataset.class_names):
        constant = np.full(truth.size, c)
        expected = f1_score(truth, constant, labels=[1, 2], average="macro", zero_division=1.0)
        assert pooled.trivial_dice[f"all_{name}"] == pytest.approx(expected, rel=1e-12)
