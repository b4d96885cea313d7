"""The README's tracking server with S3 artifacts: ``mlflow server --artifacts-destination
s3://BUCKET/mlflow``. A model trained and registered through it lands in the bucket, and loads
back the way ``segflow infer --model models:/...`` loads it, on a client without S3 credentials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import s3fs
import torch

from segflow.flows.config import TrainConfig
from segflow.tasks.tracking.model import load_model
from segflow.tasks.train import balance, ensemble, registration, training_run
from segflow.tasks.train.checkpoints import load_checkpoint
from tests.images import make_store
from tests.servers import CREDENTIALS, Bucket, free_port, wait_for

TINY = {
    "epochs": 1,
    "patches_per_epoch": 4,
    "patch_size": 32,
    "batch_size": 4,
    "base_channels": 4,
    "depth": 2,
    "num_workers": 0,
    "val_max_tiles": 2,
    "precision": "fp32",
    "device": "cpu",
}
# What the client would need to reach S3 itself: removed, as on a machine without credentials.
S3_CLIENT_VARIABLES = [*CREDENTIALS, "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"]


@pytest.fixture
def tracking_server(tmp_path: Path, s3: Bucket) -> Iterator[str]:
    """The README's ``mlflow server`` with its artifacts in ``s3://<bucket>/mlflow``; its URL."""
    port = free_port()
    env = {key: value for key, value in s3.env.items() if key not in S3_CLIENT_VARIABLES}
    # The server's S3 settings, exactly as the README gives them.
    env |= CREDENTIALS | {
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"),
        *("--artifacts-destination", s3.url("mlflow")),
    ]
    log = tmp_path / "mlflow-server.log"
    with log.open("wb") as out:
        # A session of its own: `mlflow server` runs uvicorn as a child, stopped with it.
        server = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", timeout=60, process=server)
        yield url
    except Exception:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture
def client_of(tracking_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process as a segflow client of the server: ``MLFLOW_TRACKING_URI`` set, no S3
    variables; returns the server's URL."""
    for key in S3_CLIENT_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    return tracking_server


def train_and_register(store: Path, workdir: Path) -> tuple[str, Path]:
    """The train flow's steps without Prefect (``flows/train.py``): balance, open the run,
    train one member, register it. Returns the registered URI and the kept checkpoint."""
    config = TrainConfig(
        store=str(store),
        workdir=str(workdir),
        registered_model="remote",
        alias_unlearned=True,  # one tiny epoch may not learn; the alias is needed either way
        **TINY,
    )
    plan = balance.balance_classes(config.store, config.sampling())
    run = training_run.open_training_run(plan, config.training_run(), None)
    settings = config.members(config.unet(plan.in_channels, plan.out_channels))
    member = ensemble.train_model(plan, 0, run, settings)
    registered = registration.register_model(
        plan, [member], run, settings.unet, config.registered_model, config.alias_unlearned
    )
    return registered.uri, Path(member.checkpoint)


def test_models_register_into_s3_and_load_back_through_the_server(tmp_path, s3, client_of):
    store = make_store(tmp_path, count=4, size=48)
    uri, checkpoint = train_and_register(store, tmp_path / "work")
    assert mlflow.get_tracking_uri() == client_of
    assert uri == "models:/remote/1"

    # (a) The artifacts are objects in the bucket, under mlflow/.
    bucket = s3fs.S3FileSystem(
        key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=s3.endpoint,
        skip_instance_cache=True,
    )
    objects = bucket.find(f"{s3.name}/mlflow")
    names = {Path(key).name for key in objects}
    assert {"MLmodel", "segflow_model.json", "pyfunc.py", "balance_plan.md"} <= names, objects
    assert any("/overlays/" in key and key.endswith(".png") for key in objects), objects
    assert all(key.startswith(f"{s3.name}/mlflow/") for key in objects)

    # (b) It loads back as `segflow infer --model models:/remote@newest` loads it, and predicts
    # with the trained weights.
    bundle = load_model("models:/remote@newest")
    kept = load_checkpoint(checkpoint)["model"]
    for key, value in bundle.ensemble.members[0].state_dict().items():
        torch.testing.assert_close(value, kept[key], rtol=0, atol=0)
    image = np.random.default_rng(0).integers(0, 255, (1, 1, 37, 51)).astype(np.float32)
    probs = bundle.predict(image)
    assert probs.shape == (1, 1, 37, 51) and ((probs >= 0) & (probs <= 1)).all()
