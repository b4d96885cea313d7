"""Peak memory ingesting one large tiled BigTIFF (default 16384 x 16384) with `segflow ingest`.

Runs the CLI in a subprocess and samples the RSS of its whole process tree (the flow process
plus its Dask workers) every 50 ms; then spot-checks stored pixels against the TIFF. Run:

    .venv/bin/python benchmarks/ingest_large_rss.py [--size 16384] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile
import zarr

from segflow.tasks.demo.large import write_large_pair
from segflow.tasks.storage.dataset import open_dataset


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS of `proc`, RSS of `proc` and all its descendants) in bytes."""
    try:
        own = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    total = own
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return own, total


def watch_peak_rss(proc: subprocess.Popen) -> tuple[int, int]:
    """Wait for `proc`, sampling RSS every 50 ms; (peak of `proc`, peak of its whole tree)."""
    watched = psutil.Process(proc.pid)
    peak_own = peak_tree = 0
    while proc.poll() is None:
        own, total = tree_rss(watched)
        peak_own, peak_tree = max(peak_own, own), max(peak_tree, total)
        time.sleep(0.05)
    return peak_own, peak_tree


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segflow-large-"))
    start = time.perf_counter()
    image, mask = write_large_pair(tmp / "src", size=args.size, seed=0)
    print(f"generated {image.name} {args.size}^2 in {time.perf_counter() - start:.0f} s")
    store = tmp / "ds.zarr"
    command = [
        sys.executable,
        "-m",
        "segflow.flows.cli",
        "ingest",
        str(tmp / "src"),
        str(store),
        "--workers",
        str(args.workers),
        "--val-fraction",
        "0",
        "--test-fraction",
        "0",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_main, peak_tree = watch_peak_rss(proc)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"segflow ingest failed with exit code {proc.returncode}")
    dataset = open_dataset(store)
    stored = dataset.image("large")
    rng = np.random.default_rng(0)
    src = zarr.open_array(tifffile.imread(image, aszarr=True), mode="r")
    for _ in range(5):
        y, x = rng.integers(0, args.size - 512, size=2)
        np.testing.assert_array_equal(
            stored[0, y : y + 512, x : x + 512], src[y : y + 512, x : x + 512]
        )
    decoded = args.size * args.size * 2 / 1e6
    print(
        f"segflow ingest (process + {args.workers} Dask workers): {wall:.1f} s, "
        f"{decoded / wall:.0f} MB/s decoded (image + mask, incl. Prefect and cluster start)"
    )
    print(
        f"peak RSS: flow process {peak_main / 2**20:.0f} MiB, "
        f"whole process tree {peak_tree / 2**20:.0f} MiB"
    )
    print("5 random 512^2 windows identical to the source TIFF")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
