import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from mlflow import MlflowClient
from pydantic import ValidationError
from sklearn.metrics import f1_score, log_loss

from segflow.flows.cli import main
from segflow.flows.config.pipeline import load_pipeline_config
from segflow.flows.pipeline import run_pipeline
from segflow.tasks.demo.synth import write_dataset
from segflow.tasks.storage.dataset import open_dataset

EPS = 1e-7  # the evaluation's probability clip (segflow.tasks.evaluate.scoring)

TINY = [
    "ingest.workers=1",
    "train.epochs=2",
    "train.patches_per_epoch=8",
    "train.patch_size=32",
    "train.batch_size=4",
    "train.base_channels=4",
    "train.depth=2",
    "train.num_workers=0",
    "train.val_max_tiles=8",
    "train.precision=fp32",
    "train.registered_model=tiny-pipeline",
    "infer.workers=1",
    "infer.tile=256",
    "infer.block=256",
    "evaluate.workers=1",
]


def split_pixels(store: str, predictions: str) -> tuple[list[np.ndarray], ...]:
    """Per test image, flat: the true class ids (dataset store), and the foreground probability
    and the class ids the prediction store holds for it."""
    dataset = open_dataset(store)
    stored = zarr.open_group(predictions, mode="r")
    names = dataset.samples("test")
    truth = [np.asarray(dataset.mask(name)).ravel() for name in names]
    # uint8 levels p * 255; clipped as the evaluation clips, so p = 0 or 1 costs a finite loss
    levels = [np.asarray(stored[f"{name}/0"][-1]).ravel() for name in names]
    probability = [np.clip(q / 255, EPS, 1 - EPS) for q in levels]
    predicted = [np.asarray(stored[f"{name}/labels/mask/0"][0]).ravel() for name in names]
    return truth, probability, predicted


@pytest.fixture
def source(tmp_path) -> Path:
    write_dataset(tmp_path / "src", count=8, size=(64, 64), seed=0)
    return tmp_path / "src"


def test_pipeline_runs_every_stage_then_skips_unchanged_ones(tmp_path, source):
    workdir = tmp_path / "work"
    first = run_pipeline(load_pipeline_config(str(source), str(workdir), overrides=TINY))
    assert {n: s.status for n, s in first.stages.items()} == dict.fromkeys(
        ("ingest", "train", "infer", "evaluate"), "ran"
    )
    assert first.stages["ingest"].result["samples"] == 8
    report = first.stages["evaluate"].result["report"]
    assert report["split"] == "test" and report["images"] >= 1
    truth, probability, predicted = split_pixels(first.store, first.predictions)
    assert report["images"] == len(truth)
    truth, probability, predicted = map(np.concatenate, (truth, probability, predicted))
    pooled = report["pooled"]
    assert pooled["dice"] == pytest.approx(f1_score(truth, predicted, zero_division=1.0))
    assert pooled["bce"] == pytest.approx(log_loss(truth, probability, labels=[0, 1]))
    assert Path(first.predictions, "zarr.json").exists()

    again = run_pipeline(load_pipeline_config(str(source), str(workdir), overrides=TINY))
    assert {s.status for s in again.stages.values()} == {"skipped"}
    assert again.model_uri == first.model_uri

    changed = run_pipeline(
        load_pipeline_config(str(source), str(workdir), overrides=[*TINY, "train.epochs=3"])
    )
    status = {n: s.status for n, s in changed.stages.items()}
    assert status == {"ingest": "skipped", "train": "ran", "infer": "ran", "evaluate": "ran"}
    assert changed.model_uri != first.model_uri
    assert changed.predictions != first.predictions  # one prediction store per model

    # a model gone from the registry is trained again, though its inputs are unchanged
    MlflowClient().delete_registered_model("tiny-pipeline")
    retrained = run_pipeline(
        load_pipeline_config(str(source), str(workdir), overrides=[*TINY, "train.epochs=3"])
    )
    assert retrained.stages["train"].status == "ran"

    # a new image in the source folder re-runs everything downstream of ingest
    write_dataset(source, count=9, size=(64, 64), seed=0)
    grown = run_pipeline(
        load_pipeline_config(str(source), str(workdir), overrides=[*TINY, "train.epochs=3"])
    )
    assert grown.stages["ingest"].status == "ran" and grown.stages["train"].status == "ran"
    assert grown.stages["ingest"].result["samples"] == 9


def test_config_files_and_overrides(tmp_path):
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("train:\n  epochs: 7\n  lr: 0.002\ninfer:\n  split: null\n")
    toml_file = tmp_path / "p.toml"
    toml_file.write_text("[train]\nepochs = 7\nlr = 0.002\n")
    from_yaml = load_pipeline_config("src", "w", yaml_file, ["evaluate.promote=true"])
    from_toml = load_pipeline_config("src", "w", toml_file, ["infer.split=null"])
    assert from_yaml == from_toml.model_copy(update={"evaluate": from_yaml.evaluate})
    assert from_yaml.train.epochs == 7 and from_yaml.infer.split is None
    assert from_yaml.evaluate.promote and not from_toml.evaluate.promote
    assert from_toml.train_config().store == str(Path("w") / "dataset.zarr")

    with pytest.raises(ValidationError, match="epochs"):
        load_pipeline_config("src", "w", overrides=["train.epochs=0"])
    with pytest.raises(ValidationError, match="extra"):
        load_pipeline_config("src", "w", overrides=["train.epoch=3"])
    with pytest.raises(ValueError, match="section.field=value"):
        load_pipeline_config("src", "w", overrides=["train.epochs"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="bad.toml: not valid"):
        load_pipeline_config("src", "w", bad)


def test_cli_reports_bad_config_and_prints_json(tmp_path, source, capsys):
    assert main(["pipeline", str(source), str(tmp_path / "w"), "--set", "train.lr=2"]) == 2
    assert "lr" in capsys.readouterr().err
    args = ["pipeline", str(source), str(tmp_path / "w"), "--json"]
    args += [a for item in TINY for a in ("--set", item)]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["stages"]) == {"ingest", "train", "infer", "evaluate"}


def test_the_ingest_stage_reruns_when_its_split_file_changes(tmp_path, source):
    from segflow.flows.config import IngestConfig
    from segflow.flows.pipeline import ingest_key

    split = tmp_path / "split.json"  # outside the source folder
    split.write_text('{"test": ["sample_000"]}')
    config = IngestConfig(source=str(source), store="s.zarr", split_file=str(split))
    first = ingest_key(config)
    assert ingest_key(config) == first
    split.write_text('{"test": ["sample_001"]}')
    assert ingest_key(config) != first
