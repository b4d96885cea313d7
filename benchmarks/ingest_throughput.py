"""Ingest throughput: `segflow ingest` (the Prefect flow) against a plain single-process loop.

Both ingest the same files into a fresh store with the same chunks, shards and codec; throughput
is MB/s of decoded pixels (image + mask). The flow's time includes starting its Dask cluster; the
temporary Prefect server is started once before timing. Run:

    .venv/bin/python benchmarks/ingest_throughput.py [--source DIR] [--workers 2]

Without --source it generates 120 RGB 1024x1024 PNG pairs with `tasks.synth`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from flows.env import use_local_defaults

use_local_defaults()

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import zarr  # noqa: E402
from skimage import io  # noqa: E402

from flows.config import IngestConfig  # noqa: E402
from flows.ingest import ingest_dataset  # noqa: E402
from tasks.pairs import find_pairs  # noqa: E402
from tasks.store import _COMPRESSORS, CHUNK, SHARD  # noqa: E402
from tasks.synth import write_dataset  # noqa: E402


def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
    return io.imread(path)


def plain_loop(source: Path, store: Path, foreground_value: int | None) -> int:
    """Read each pair with scikit-image/tifffile and write it with zarr, one at a time."""
    root = zarr.open_group(store, mode="w")
    pairs, _ = find_pairs(source)
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
                chunks=(*lead, CHUNK, CHUNK),
                shards=(*lead, SHARD, SHARD),
                compressors=_COMPRESSORS,
            )
            array[...] = data
        np.bincount(ids.ravel(), minlength=2)
        total += image.nbytes + ids.nbytes
    return total


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
        write_dataset(source, count=args.count, size=(1024, 1024), channels=3, seed=0)
    config = {
        "source": str(source),
        "workers": args.workers,
        "foreground_value": args.foreground_value,
    }
    ingest_dataset(IngestConfig(store=str(tmp / "warm.zarr"), **config))  # server, imports
    plain, flow = [], []
    for _ in range(args.repeat):
        shutil.rmtree(tmp / "plain.zarr", ignore_errors=True)
        start = time.perf_counter()
        nbytes = plain_loop(source, tmp / "plain.zarr", args.foreground_value)
        plain.append(nbytes / 1e6 / (time.perf_counter() - start))
        shutil.rmtree(tmp / "flow.zarr", ignore_errors=True)
        start = time.perf_counter()
        ingest_dataset(IngestConfig(store=str(tmp / "flow.zarr"), **config))
        flow.append(nbytes / 1e6 / (time.perf_counter() - start))
    print(f"source {source}: {nbytes / 1e6:.0f} MB decoded")
    for name, runs in (("plain loop", plain), (f"segflow ingest x{args.workers}", flow)):
        print(f"{name:20s} {max(runs):7.1f} MB/s  runs {[round(x, 1) for x in runs]}")
    print(f"speed-up             {max(flow) / max(plain):7.2f}x")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
