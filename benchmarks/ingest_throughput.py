"""Ingest throughput: `segflow ingest` against a plain single-process loop, same files, one run.

All rows write a fresh store with the same chunks, shards and codec; throughput is MB/s of
decoded pixels (image + mask):

- plain loop: read with scikit-image/tifffile, write with zarr, one process;
- 2 plain loops: the same loop in 2 processes on halves of the files (what 2 cores allow);
- segflow flow: the `ingest-dataset` flow end to end (Dask LocalCluster start and Prefect
  bookkeeping included; the temporary Prefect server is started once before timing);
- segflow fan-out: the flow's Dask fan-out of `ingest_pair` on an already running cluster.

Run:

    .venv/bin/python benchmarks/ingest_throughput.py [--source DIR] [--workers 2]

Without --source it generates 120 RGB 1024x1024 PNG pairs with `segflow.tasks.demo.synth`.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from segflow.flows.env import ready_for_prefect, use_local_defaults

use_local_defaults()
ready_for_prefect()

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import zarr  # noqa: E402
from skimage import io  # noqa: E402

from segflow.flows.config import IngestConfig  # noqa: E402
from segflow.flows.ingest import ingest_dataset  # noqa: E402
from segflow.tasks.demo.synth import SynthSpec, write_dataset  # noqa: E402
from segflow.tasks.ingest.pairs import Pair, find_pairs  # noqa: E402
from segflow.tasks.ingest.samples import SampleChecks, ingest_pair_with  # noqa: E402
from segflow.tasks.runtime.cluster import dask_client  # noqa: E402
from segflow.tasks.storage.dataset import DATASET_CHUNK, DATASET_SHARD  # noqa: E402
from segflow.tasks.storage.dataset_writer import _COMPRESSORS, init_store  # noqa: E402


def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
    return io.imread(path)


def plain_loop(pairs: list[Pair], store: Path, foreground_value: int | None) -> int:
    """Read each pair with scikit-image/tifffile and write it with zarr, one at a time."""
    root = zarr.open_group(store, mode="w")
    total = 0
    for pair in pairs:
        image, mask = _read(pair.image), _read(pair.mask)
        image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        ids = (mask == (255 if foreground_value is None else foreground_value)).astype(np.uint8)
        for name, data in (("images", image), ("masks", ids)):
            lead = data.shape[:-2]
            array = root.create_array(
                f"{name}/{pair.sample_id}",
                shape=data.shape,
                dtype=data.dtype,
                chunks=(*lead, DATASET_CHUNK, DATASET_CHUNK),
                shards=(*lead, DATASET_SHARD, DATASET_SHARD),
                compressors=_COMPRESSORS,
            )
            array[...] = data
        np.bincount(ids.ravel(), minlength=2)
        total += image.nbytes + ids.nbytes
    return total


def fixed_cost(tmp: Path, runs: int) -> float:
    """Median seconds of the whole `ingest-dataset` flow on 2 tiny pairs with the default
    workers: what a run costs beyond its pixels (Prefect's task runs, the store, the index)."""
    source = tmp / "tiny"
    write_dataset(source, count=2, size=(64, 64), seed=0)
    seconds = []
    for _ in range(runs):
        shutil.rmtree(tmp / "tiny.zarr", ignore_errors=True)
        start = time.perf_counter()
        ingest_dataset(IngestConfig(source=str(source), store=str(tmp / "tiny.zarr")))
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path)
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--foreground-value", type=int)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    source = args.source
    if source is None:
        source = tmp / "src"
        rgb = SynthSpec(channels=3)
        write_dataset(source, count=args.count, size=(1024, 1024), spec=rgb, seed=0)
    config = {
        "source": str(source),
        "workers": args.workers,
        "foreground_value": args.foreground_value,
    }
    ingest_dataset(IngestConfig(store=str(tmp / "warm.zarr"), **config))  # server, imports
    settings = IngestConfig(store=str(tmp / "out"), **config)
    pairs, _ = find_pairs(source, settings.pair_layout())
    halves = [pairs[: len(pairs) // 2], pairs[len(pairs) // 2 :]]
    checks = SampleChecks(settings.size_limits(), image_format=None)
    options = {"rules": settings.mask_rules(), "checks": checks, "workers": 1}
    rates: dict[str, list[float]] = defaultdict(list)

    def timed(name: str, run) -> None:
        for path in tmp.glob("out*"):
            shutil.rmtree(path)
        start = time.perf_counter()
        run()
        rates[name].append(nbytes / 1e6 / (time.perf_counter() - start))

    nbytes = plain_loop(pairs, tmp / "sizes.zarr", args.foreground_value)
    with (
        ProcessPoolExecutor(2) as pool,
        dask_client(workers=args.workers) as client,
    ):
        list(pool.map(str, range(2)))  # start the processes before timing
        client.run(importlib.import_module, "segflow.tasks.ingest.samples")
        for _ in range(args.repeat):
            timed("plain loop", lambda: plain_loop(pairs, tmp / "out", args.foreground_value))
            timed(
                "2 plain loops",
                lambda: list(
                    pool.map(
                        plain_loop,
                        halves,
                        [tmp / "out0", tmp / "out1"],
                        [args.foreground_value] * 2,
                    )
                ),
            )
            timed(
                f"segflow flow x{args.workers}",
                lambda: ingest_dataset(IngestConfig(store=str(tmp / "out"), **config)),
            )

            def fan_out() -> None:
                init_store(tmp / "out", class_names=("background", "foreground"))
                opts = {**options, "store": str(tmp / "out")}
                futures = client.map(ingest_pair_with, pairs, [None] * len(pairs), options=opts)
                client.gather(futures)

            timed(f"segflow fan-out x{args.workers}", fan_out)
    fixed = fixed_cost(tmp, args.repeat + 1)
    print(f"source {source}: {len(pairs)} pairs, {nbytes / 1e6:.0f} MB decoded")
    print(f"fixed cost: the flow on 2 pairs of 64², default workers: {fixed:.2f} s (median)")
    base = max(rates["plain loop"])
    for name, runs in rates.items():
        print(
            f"{name:22s} {max(runs):7.1f} MB/s  {max(runs) / base:5.2f}x  "
            f"runs {[round(x, 1) for x in runs]}"
        )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
