"""Against a real Prefect server: ``segflow serve`` runs a triggered deployment, and
``prefect deploy`` accepts ``deployments/prefect.yaml``."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from segflow.tasks.storage.dataset import open_dataset
from tests.images import make_source

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `command` in its own process group (so it can be stopped with its children)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen, sig: int, then: int | None = None) -> None:
    """Send `sig` to the process group (then `then`, if given), waiting 60 s for each; SIGKILL
    it if it has still not exited."""
    for signum in (sig, then):
        if signum is None or process.poll() is not None:
            continue
        os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the process log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """A Prefect server on a free port with its own home; yields its API URL and client env."""
    home = tmp_path_factory.mktemp("prefect")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    port = free_port()
    log = home / "server.log"
    server = start(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env,
        log,
    )
    try:
        api = f"http://127.0.0.1:{port}/api"
        wait_for(f"{api}/health", server, log, timeout=90)
        yield api, {**env, "PREFECT_API_URL": api}
    finally:
        stop(server, signal.SIGTERM)


def test_served_deployment_runs_when_triggered(prefect_api, tmp_path):
    api, env = prefect_api
    data = tmp_path / "data"
    source = make_source(data / "raw", n=6)
    log = tmp_path / "serve.log"
    serving = start(
        [sys.executable, "-m", "segflow.flows.cli", "serve", "--data-root", str(data)]
        + ["--only", "ingest-dataset/bulk-ingest"],
        {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        log,
    )
    try:
        wait_for(f"{api}/deployments/name/ingest-dataset/bulk-ingest", serving, log, timeout=90)
        # The README's syntax: the run's `config` replaces the deployment's default one.
        config = {"source": str(source), "store": str(tmp_path / "ds.zarr"), "workers": 1}
        bad = subprocess.run(
            [*PREFECT, "deployment", "run", "ingest-dataset/bulk-ingest"]
            + ["--param", f"config={json.dumps({**config, 'num_classes': 1})}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode != 0 and "num_classes" in bad.stdout + bad.stderr, bad.stdout
        run = subprocess.run(
            [*PREFECT, "deployment", "run", "ingest-dataset/bulk-ingest"]
            + ["--param", f"config={json.dumps(config)}", "--watch", "--watch-timeout", "120"],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert run.returncode == 0, run.stdout + run.stderr + log.read_text()[-3000:]
        assert "Completed" in run.stdout
        deployment = httpx.get(f"{api}/deployments/name/ingest-dataset/bulk-ingest").json()
        assert deployment["parameters"]["config"]["source"] == str(data / "raw")
        assert [s["active"] for s in deployment["schedules"]] == [False]
        schema = deployment["parameter_openapi_schema"]["definitions"]["IngestConfig"]
        assert schema["properties"]["num_classes"]["minimum"] == 2
    finally:
        stop(serving, signal.SIGINT, then=signal.SIGTERM)
    # Known: twice in CI (2026-12-01) the served runner did not stop on SIGINT within 60 s but
    # did on SIGTERM; a hang on both still fails here (SIGKILL: -9). To be investigated.
    assert serving.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert len(open_dataset(tmp_path / "ds.zarr").samples()) == 6


def test_prefect_deploy_accepts_the_yaml(prefect_api):
    api, env = prefect_api

    def cli(*args: str) -> None:
        done = subprocess.run(
            [*PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr

    cli("work-pool", "create", "segflow", "--type", "process")
    cli("deploy", "--no-prompt", "--prefect-file", "deployments/prefect.yaml", "--all")
    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for entry in document["deployments"]:
        query = {"deployments": {"name": {"any_": [entry["name"]]}}}
        (deployment,) = httpx.post(f"{api}/deployments/filter", json=query).json()
        assert deployment["entrypoint"] == entry["entrypoint"]
        assert deployment["work_pool_name"] == "segflow"
        assert deployment["parameters"] == entry["parameters"]
        crons = [s["schedule"]["cron"] for s in deployment["schedules"]]
        assert crons == [s["cron"] for s in entry.get("schedules", [])]
        assert not any(s["active"] for s in deployment["schedules"])
        # Relative parameter paths resolve against the directory `prefect deploy` ran in.
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
