"""Credentials and endpoint given as a run's `storage_options`, not in the environment: the
command and its Dask workers (spawned, so not sharing this process's fsspec config) use them."""

import json
import os
import subprocess
import sys
from pathlib import Path

from segflow.tasks.storage.dataset import open_dataset
from tests.images import make_source
from tests.servers import Bucket

SEGFLOW = Path(sys.executable).with_name("segflow")


def test_ingest_to_s3_with_storage_options_only(s3: Bucket, tmp_path):
    source = make_source(tmp_path / "src", n=4)
    options = {
        "s3": {
            "endpoint_url": s3.endpoint,
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"},
        }
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SEGFLOW_HOME": str(tmp_path / "home"),
    }
    store = s3.url("ds.zarr")
    args = ["ingest", source, store, "--workers", "2", "--storage-options", json.dumps(options)]
    done = subprocess.run(
        [str(SEGFLOW), *map(str, args)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(open_dataset(store).samples()) == 4  # read back with the fixture's AWS variables

    without = [a for a in args if a not in ("--storage-options", json.dumps(options))]
    refused = subprocess.run(
        [str(SEGFLOW), *map(str, without)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "no credentials found" in refused.stderr, refused.stderr
