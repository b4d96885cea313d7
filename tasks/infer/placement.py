"""Where a block runs: the Dask resources it claims and the device a worker predicts on."""

from __future__ import annotations

from collections.abc import Collection

import torch

from segflow.tasks.runtime.device import DeviceName, resolve_device

# The Dask resource that marks a GPU worker: ``dask worker --resources GPU=1``, one worker per
# GPU (dask-cuda's ``dask cuda worker --resources GPU=1`` starts one per GPU by itself).
GPU = "GPU"


def block_resources(advertised: Collection[str], device: DeviceName) -> dict[str, float] | None:
    """The Dask resources each block claims: one `GPU` where workers of the cluster advertise
    that resource (see :func:`segflow.tasks.runtime.cluster.advertised_resources`) and `device`
    is not ``cpu``; else none, and blocks go to any worker as before.

    Claiming one GPU per block makes the scheduler run a block only on a worker that has a GPU
    resource, and at most as many blocks at once there as it has GPUs, whatever its threads:
    two blocks on one device would share its memory (a large tile batch can run out of it) and
    compute, and a CPU-only worker beside GPU ones would predict its blocks on the CPU, many
    times slower, while the GPUs wait for the run's last block.
    """
    if GPU in advertised and device != "cpu":
        return {GPU: 1}
    return None


def worker_device(name: DeviceName) -> torch.device:
    """The device of this process.

    On CUDA with several GPUs visible: a worker that advertises a `GPU` resource was given its
    GPU by whoever started it (``CUDA_VISIBLE_DEVICES``, which dask-cuda sets with the worker's
    own GPU first) and uses torch's current device; worker k of a LocalCluster takes GPU
    k mod n. CPU, one GPU, and processes that are not Dask workers: :func:`resolve_device`.
    """
    device = resolve_device(name)
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not in a worker
        return device
    if worker.state.total_resources.get(GPU, 0) > 0:
        return device
    try:
        index = int(worker.name)
    except (ValueError, TypeError):  # a named worker
        return device
    return torch.device("cuda", index % torch.cuda.device_count())
