"""The whole pipeline with every store and input on S3 (moto's server) through an external Dask
cluster (``dask scheduler`` + two ``dask worker`` processes in folders of their own)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from dask.distributed import Client, get_task_stream
from dask.utils import key_split

from segflow.flows.config.pipeline import load_pipeline_config
from segflow.flows.infer import infer_images
from segflow.flows.ingest import ingest_dataset
from segflow.tasks.demo.synth import write_dataset
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.urls import open_group
from tests.flows.test_pipeline_flow import TINY
from tests.remote import upload
from tests.servers import Bucket

SEGFLOW = Path(sys.executable).with_name("segflow")


@pytest.mark.slow
def test_the_pipeline_on_s3_through_a_cluster_writes_what_a_local_run_writes(
    s3: Bucket, dask_cluster, tmp_path
):
    local_source = tmp_path / "src"
    write_dataset(local_source, count=8, size=(600, 560), seed=0)
    source = upload(local_source, s3.url("raw"))
    cluster = dask_cluster([], [])  # started after `s3`: the workers see its AWS variables
    work = tmp_path / "work"
    args = [SEGFLOW, "pipeline", source, work, "--stores", s3.url("stores"), "--json"]
    args += ["--dask-address", cluster.address]
    args += [f"--set={item}" for item in [*TINY, "infer.split=null"]]
    env = {**os.environ, "SEGFLOW_HOME": str(tmp_path / "home")}
    with Client(cluster.address) as client, get_task_stream(client) as stream:
        done = subprocess.run(
            list(map(str, args)), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    ran = {key_split(record["key"]) for record in stream.data}
    assert {"ingest_pair_with", "predict_block", "read_block_tally"} <= ran, ran  # on the cluster
    summary = json.loads(done.stdout)
    assert summary["store"] == s3.url("stores", "dataset.zarr")
    assert summary["predictions"].startswith(s3.url("stores", "predictions/"))
    assert not (work / "dataset.zarr").exists()  # only runs and records are local

    # The same source ingested locally, in this process: the same arrays, bit for bit.
    config = load_pipeline_config(str(local_source), str(work), overrides=TINY)
    local_store = str(tmp_path / "local.zarr")
    ingest_dataset(config.ingest_config().model_copy(update={"store": local_store}))
    remote, local = open_dataset(summary["store"]), open_dataset(local_store)
    assert remote.samples() == local.samples() and remote.meta["split"] == local.meta["split"]
    for name in local.samples():
        np.testing.assert_array_equal(remote.image(name)[...], local.image(name)[...])
        np.testing.assert_array_equal(remote.mask(name)[...], local.mask(name)[...])

    # The pipeline's model on the local store, in this process: the same predictions.
    infer = config.infer_config(summary["model_uri"], "local")
    local_out = str(tmp_path / "local-predictions.zarr")
    update = {"input": local_store, "output": local_out, "dask_address": None, "workers": 1}
    update |= {"split": None}
    infer_images(infer.model_copy(update=update))
    got, want = open_group(summary["predictions"]), zarr.open_group(local_out, mode="r")
    names = sorted(name for name, _ in want.groups() if name != "model")
    assert names == local.samples()
    for name in names:
        for key in (f"{name}/0", f"{name}/labels/mask/0"):
            np.testing.assert_array_equal(got[key][...], want[key][...], err_msg=key)
    assert summary["stages"]["evaluate"]["result"]["run_id"]  # scored on the cluster, logged
