"""Inference on an external Dask cluster: ``dask scheduler`` and ``dask worker`` processes
started apart from segflow, each worker in its own working directory (tests/cluster.py).

Paths are absolute and local: the workers run on this machine, elsewhere in the file system.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr
from dask.distributed import Client, get_task_stream

from segflow.flows.config import InferConfig
from segflow.tasks.infer.blocks import predict_blocks
from segflow.tasks.infer.output import prepare_predictions
from segflow.tasks.infer.sources import find_sources
from tests.images import save, tiny_bundle

SEGFLOW = Path(sys.executable).with_name("segflow")  # the console script of this environment
BLOCKS = 2 + 4  # with 256² blocks: a is 1 x 2 blocks, b is 2 x 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of two images and a model bundle."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    save(root / "in" / "a.png", rng.integers(0, 255, (300, 420), dtype=np.uint8))
    save(root / "in" / "b.tif", rng.integers(0, 255, (449, 391), dtype=np.uint8), tile=(64, 64))
    return root / "in", tiny_bundle(root / "bundle", seed=0, head_scale=20.0)


def config(inputs: tuple[Path, Path], out: Path, **changes) -> InferConfig:
    """Small tiles and blocks, fp32, one torch thread per worker; flips (tta) make a block
    last long enough (~0.2 s) for a sampler to see two run at once."""
    folder, bundle = inputs
    settings = {"tile": 64, "margin": 8, "block": 256, "tta": True}
    settings |= {"precision": "fp32", "torch_threads": 1}
    return InferConfig(
        input=str(folder), output=str(out), model=str(bundle), **{**settings, **changes}
    )


def run_blocks(config: InferConfig) -> tuple[int, int, dict[str, str]]:
    """The flow's steps up to the written blocks, without Prefect."""
    sources, _ = find_sources(config.input)
    parallelism = config.parallelism()
    bundle, _ = prepare_predictions(
        sources, config.output, model_uri=config.model, settings=config.model_dump()
    )
    return predict_blocks(
        sources,
        config.output,
        config.block_settings(bundle, parallelism),
        workers=parallelism.workers,
        dask_address=config.dask_address,
        log=lambda _: None,
    )


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """The prediction store of an in-process run (one local worker: no Dask)."""
    out = tmp_path_factory.mktemp("reference") / "out.zarr"
    assert run_blocks(config(inputs, out, workers=1)) == (BLOCKS, 0, {})
    return out


def assert_same_predictions(out: Path, reference: Path) -> None:
    """Probabilities and masks (full resolution) equal bit for bit."""
    got, want = zarr.open_group(out, mode="r"), zarr.open_group(reference, mode="r")
    for name in ("a", "b"):
        for key in (f"{name}/0", f"{name}/labels/mask/0"):
            np.testing.assert_array_equal(got[key][...], want[key][...], err_msg=key)


def block_workers(stream: list[dict]) -> list[str]:
    """The worker address of each ``predict_block`` task in a task stream."""
    return [r["worker"] for r in stream if str(r["key"]).startswith("predict_block")]


@pytest.mark.slow
def test_cli_infer_on_an_external_cluster_matches_an_in_process_run(
    dask_cluster, inputs, reference, tmp_path
):
    """`segflow infer --dask-address` on two workers, each in a working directory of its own,
    writes what one in-process worker writes, and both workers predict blocks."""
    cluster = dask_cluster([], [])
    out = tmp_path / "out.zarr"
    folder, bundle = inputs
    args = ["infer", folder, out, "--model", bundle, "--tile", "64", "--margin", "8"]
    args += ["--block", "256", "--tta", "--precision", "fp32", "--torch-threads", "1", "--json"]
    env = {**os.environ, "SEGFLOW_HOME": str(tmp_path / "home")}
    with Client(cluster.address) as client, get_task_stream(client) as stream:
        done = subprocess.run(
            [str(SEGFLOW), *map(str, args), "--dask-address", cluster.address],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        workers = set(client.scheduler_info(n_workers=-1)["workers"])
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert (summary["blocks_predicted"], summary["failed"]) == (BLOCKS, {})
    placed = block_workers(stream.data)
    assert len(placed) == BLOCKS and set(placed) == workers  # both workers predicted blocks
    assert_same_predictions(out, reference)


def test_blocks_run_only_on_the_gpu_worker_one_at_a_time(dask_cluster, inputs, reference, tmp_path):
    """Beside a worker without resources, the one started with ``--resources GPU=1`` runs
    every block, one at a time although it has two threads (no CUDA here: the resource is
    only advertised, so this checks placement, not the device)."""
    cluster = dask_cluster([], ["--resources", "GPU=1", "--nthreads", "2"])
    out = tmp_path / "out.zarr"
    finished = threading.Event()
    at_once: list[int] = []  # blocks the GPU worker was executing, sampled

    def executing_blocks(dask_worker) -> int:  # nested: pickled by value for the worker
        return sum(
            str(task.key).startswith("predict_block") for task in dask_worker.state.executing
        )

    with Client(cluster.address) as client, get_task_stream(client) as stream:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        (gpu,) = [address for address, info in workers.items() if info["resources"]]

        # The worker's own state, not the task stream's times: a worker shifts those by its
        # estimate of the scheduler's clock, which moves by tens of ms on a loaded machine.
        def sample() -> None:
            while not finished.is_set():
                at_once.append(client.run(executing_blocks, workers=[gpu])[gpu])

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = run_blocks(config(inputs, out, dask_address=cluster.address))
        finally:
            finished.set()
            sampler.join()
    assert result == (BLOCKS, 0, {})
    assert block_workers(stream.data) == [gpu] * BLOCKS
    assert max(at_once) == 1, at_once
    assert_same_predictions(out, reference)
