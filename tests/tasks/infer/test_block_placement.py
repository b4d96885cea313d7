"""Where blocks run: the Dask resources they claim and the device a worker picks."""

from __future__ import annotations

from types import SimpleNamespace

import distributed
import pytest
import torch

from segflow.tasks.infer.placement import block_resources, worker_device


@pytest.mark.parametrize(
    ("advertised", "device", "claimed"),
    [
        (set(), "auto", None),  # a LocalCluster, or workers started without resources
        ({"MEM"}, "auto", None),
        ({"GPU"}, "auto", {"GPU": 1}),
        ({"GPU", "MEM"}, "cuda", {"GPU": 1}),
        ({"GPU"}, "cpu", None),  # CPU inference may use every worker
    ],
)
def test_blocks_claim_one_gpu_where_workers_offer_gpus(advertised, device, claimed):
    assert block_resources(advertised, device) == claimed


def fake_worker(monkeypatch, name, resources):
    """Two CUDA devices, and a Dask worker of `name` that offers `resources`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    worker = SimpleNamespace(name=name, state=SimpleNamespace(total_resources=resources))
    monkeypatch.setattr(distributed, "get_worker", lambda: worker)


@pytest.mark.parametrize(
    ("name", "resources", "device"),
    [
        (1, {}, torch.device("cuda", 1)),  # LocalCluster worker 1 takes GPU 1
        (3, {}, torch.device("cuda", 1)),
        ("tcp://10.0.0.5:4000", {}, torch.device("cuda")),  # a named worker: the current GPU
        # started with its own GPU (CUDA_VISIBLE_DEVICES, dask-cuda): its current device,
        # whatever its name
        (1, {"GPU": 1.0}, torch.device("cuda")),
        ("tcp://10.0.0.5:4000", {"GPU": 1.0}, torch.device("cuda")),
    ],
)
def test_worker_device_on_cuda(monkeypatch, name, resources, device):
    fake_worker(monkeypatch, name, resources)
    assert worker_device("auto") == device
    assert worker_device("cuda") == device


def test_worker_device_on_cpu_ignores_the_worker(monkeypatch):
    fake_worker(monkeypatch, 1, {"GPU": 1.0})
    assert worker_device("cpu") == torch.device("cpu")
