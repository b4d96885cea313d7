"""Object storage that cannot be used ends a command in bounded time with one line naming the URL
and the problem, before Prefect starts, and creates nothing (issue 16, part 7).

Each URL a command takes (source, store, input, output, predictions) meets each problem: an
endpoint with nothing listening, a missing bucket, no credentials, and access denied (a second
moto server that enforces IAM auth, so the test keys are unknown to it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.test_cli_mistakes import SEGFLOW, assert_one_line, prefect_started
from tests.images import make_source
from tests.servers import CREDENTIALS, Bucket, free_port, wait_for

BOUND = 30  # seconds; measured 1-6 s on a loaded 2-core machine (an unreachable one is slowest)

# role -> arguments ({url}: the remote location) and the line's start
ROLES = {
    "ingest source": (["ingest", "{url}/raw", "S.zarr"], "source {url}/raw:"),
    "ingest store": (["ingest", "src", "{url}/ds.zarr"], "store {url}/ds.zarr:"),
    "train store": (["train", "{url}/ds.zarr"], "store {url}/ds.zarr:"),
    "infer input": (["infer", "{url}/in", "out.zarr", "--model", "src"], "input {url}/in:"),
    "infer output": (
        ["infer", "src/images", "{url}/out.zarr", "--model", "src"],
        "output {url}/out.zarr:",
    ),
    "evaluate predictions": (["evaluate", "{url}/p.zarr", "S.zarr"], "predictions {url}/p.zarr:"),
    "evaluate store": (["evaluate", "preds", "{url}/ds.zarr"], "store {url}/ds.zarr:"),
}
CASES = {  # case -> the problem the line names
    "unreachable": "cannot reach the storage endpoint",
    "missing bucket": "the bucket '{bucket}' does not exist",
    "no credentials": "no credentials found",
    "access denied": "access denied",
}
# Every role once in the default run (the cases in turn), the rest of the matrix in the slow run.
MATRIX = [
    pytest.param(case, role, marks=() if r % len(CASES) == c else pytest.mark.slow)
    for r, role in enumerate(ROLES)
    for c, case in enumerate(CASES)
]


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[str, str]]:
    """A moto server that enforces IAM auth after one free action, which makes the bucket
    ``guarded``; its endpoint and the bucket's name. The test keys are unknown to it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{endpoint}/moto-api/", timeout=30, process=process)
        # the free action: an unsigned CreateBucket (s3fs would spend it on a HeadBucket)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/guarded", method="PUT"))
        assert _objects(endpoint) == (["guarded"], 0)
        yield endpoint, "guarded"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _objects(endpoint: str) -> tuple[list[str], int]:
    """The buckets and the number of objects on the moto server at `endpoint` (its own view,
    without auth)."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as reply:
        s3 = json.load(reply)["s3"]
    return sorted(b["name"] for b in s3["FakeBucket"]), len(s3["FakeKey"])


def _env(cwd: Path, **aws: str) -> dict[str, str]:
    """This environment without segflow's, Prefect's, MLflow's or AWS settings, with `aws`;
    no credentials file, config file or instance metadata to fall back on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "SEGFLOW_", "AWS_")) and k != "DO_NOT_TRACK"
    }
    missing = str(cwd / "no-such-aws-file")
    env |= {"SEGFLOW_HOME": str(cwd / ".segflow"), "AWS_DEFAULT_REGION": "us-east-1"}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": missing, "AWS_CONFIG_FILE": missing}
    return env | {"AWS_EC2_METADATA_DISABLED": "true", **aws}


@pytest.mark.parametrize(("case", "role"), MATRIX)
def test_unusable_object_storage_ends_in_one_line_in_bounded_time(tmp_path, request, case, role):
    make_source(tmp_path / "src", n=1)
    (tmp_path / "preds").mkdir()
    (tmp_path / "preds" / "zarr.json").write_text("{}")  # the local predictions: not read
    if case == "access denied":
        endpoint, bucket = request.getfixturevalue("guarded")
        env = _env(tmp_path, AWS_ACCESS_KEY_ID="unknown", AWS_SECRET_ACCESS_KEY="unknown")
    else:
        s3: Bucket = request.getfixturevalue("s3")
        endpoint, bucket = s3.endpoint, s3.name
        env = _env(tmp_path, **CREDENTIALS)
        if case == "unreachable":
            endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        elif case == "missing bucket":
            bucket += "-missing"
        else:
            del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    env["AWS_ENDPOINT_URL"] = endpoint
    url = f"s3://{bucket}"
    before = _objects(endpoint) if case != "unreachable" else None
    args, start = ROLES[role]

    began = time.perf_counter()
    done = subprocess.run(
        [str(SEGFLOW), *(a.format(url=url) for a in args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - began

    line = assert_one_line(done, 2, start.format(url=url), CASES[case].format(bucket=bucket))
    assert "Traceback" not in done.stderr + done.stdout
    assert seconds < BOUND, f"{seconds:.1f} s: {line}"
    for name in ("S.zarr", "out.zarr", "work", ".segflow"):
        assert not (tmp_path / name).exists(), name
    assert not prefect_started(tmp_path)
    if before is not None:  # no bucket made, no object written
        assert _objects(endpoint) == before
