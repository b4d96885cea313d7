"""Peak memory and time of instance labelling (`segflow infer --instances`) on a large mask.

Writes a prediction store with one SIZE² class-id mask in BLOCK² shards (random clusters of
8 px squares, drawn block by block, crossing every block border), then labels it in a fresh
subprocess per method and prints the subprocess's peak RSS (``ru_maxrss``), its RSS after the
imports, and the wall time of the labelling:

- ``blocks``: segflow's :func:`segflow.tasks.storage.predictions.write_instances` (block by
  block, pyramid levels included);
- ``whole``: the previous in-memory code (whole mask, ``remove_small_objects`` + ``label``; not
  written);
- ``dask-image``: ``dask_image.ndmeasure.label`` (8-connectivity) over the mask's blocks, stored
  into ``labels/instances/0`` with ``da.store`` (no size filter, no pyramid); needs
  ``pip install dask-image`` (not a segflow dependency).

Run:

    .venv/bin/python benchmarks/instances_large.py [--size 32768] [--block 2048]
        [--methods blocks whole dask-image] [--min-size 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import create_image_arrays, write_instances


def write_mask(out: Path, size: int, block: int) -> None:
    """A store with one image ``x`` whose mask holds random clusters of 8 px squares."""
    create_image_arrays(
        out,
        "x",
        shape=(size, size),
        class_names=("background", "a"),
        classes=1,
        block=block,
        probability_dtype="uint8",
        attrs={},
    )
    mask = zarr.open_array(out / "x/labels/mask/0", mode="r+")
    for index, (y0, y1, x0, x1) in enumerate(blocks((size, size), block)):
        cells = np.random.default_rng(index).random((-(-(y1 - y0) // 8), -(-(x1 - x0) // 8)))
        squares = np.repeat(np.repeat(cells < 0.4, 8, axis=0), 8, axis=1)
        mask[0, y0:y1, x0:x1] = squares[: y1 - y0, : x1 - x0]


def label(out: Path, method: str, min_size: int, block: int) -> dict[str, float]:
    """Label the store's mask with `method`; peak and post-import RSS (MiB) and seconds."""
    if method == "dask-image":
        import dask
        import dask.array as da
        from dask_image import ndmeasure
    from skimage import measure, morphology

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if method == "blocks":
        objects = write_instances(out, "x", min_size=min_size, block=block)
    elif method == "whole":
        foreground = np.asarray(zarr.open_array(out / "x/labels/mask/0", mode="r")[0]) > 0
        kept = morphology.remove_small_objects(foreground, max_size=max(0, min_size - 1))
        objects = int(measure.label(kept, connectivity=2).max())
    else:
        write_instances(out, "x", min_size=0, block=block)  # the arrays (labels overwritten)
        mask = da.from_zarr(str(out / "x/labels/mask/0"), chunks=(1, block, block))[0] > 0
        labels, count = ndmeasure.label(mask, structure=np.ones((3, 3)))
        target = zarr.open_array(out / "x/labels/instances/0", mode="r+")
        stored = da.store(labels.astype(np.uint32)[None], target, lock=False, compute=False)
        objects = int(dask.compute(stored, count)[1])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"objects": objects, "seconds": seconds, "rss_after_imports": base, "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32768)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--min-size", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["blocks"])
    parser.add_argument("--label", type=Path, help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if args.label:
        print(json.dumps(label(args.label, args.methods[0], args.min_size, args.block)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pred.zarr"
        start = time.perf_counter()
        write_mask(out, args.size, args.block)
        print(f"{args.size}² mask in {args.block}² blocks: {time.perf_counter() - start:.0f} s")
        for method in args.methods:
            run = subprocess.run(
                [sys.executable, __file__, "--label", str(out), "--methods", method]
                + ["--min-size", str(args.min_size), "--block", str(args.block)],
                capture_output=True,
                text=True,
                check=False,
            )
            print(method, run.stdout.strip() or run.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
