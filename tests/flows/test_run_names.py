"""Prefect runs named and tagged from their inputs, read back from the Prefect API."""

from datetime import date

from prefect.client.orchestration import get_client

from segflow.flows.config import (
    EvaluateConfig,
    InferConfig,
    IngestConfig,
    PipelineConfig,
    TrainConfig,
)
from segflow.flows.ingest import ingest_dataset
from segflow.flows.runs import evaluate_labels, infer_labels, pipeline_labels, train_labels
from tests.images import make_source


def test_ingest_run_gets_its_name_and_tags(tmp_path):
    source = make_source(tmp_path / "raw", n=3, size=(16, 16))
    config = IngestConfig(source=str(source), store=str(tmp_path / "ds.zarr"), workers=1)
    state = ingest_dataset(config, return_state=True)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.name == f"ingest-raw-{date.today():%Y-%m-%d}"
    assert {"segflow", "ingest", "source:raw", "store:ds"} <= set(run.tags)


def test_stage_labels_name_the_data():
    train = train_labels(TrainConfig(store="/w/ds.zarr", run_name="r1"))
    assert train.name == "train-ds-r1" and "model:segflow-unet" in train.tags
    infer = infer_labels(InferConfig(input="s3://b/new/", output="/w/p.zarr"))
    assert infer.name == "infer-new" and "output:p" in infer.tags
    assert evaluate_labels(EvaluateConfig(predictions="/w/p.zarr", store="/w/ds.zarr")).name == (
        "evaluate-p"
    )
    assert pipeline_labels(PipelineConfig(source="/d/raw", workdir="/w/run1/")).name == (
        "pipeline-run1"
    )
