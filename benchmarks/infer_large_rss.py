"""Peak memory and speed of `segflow infer` on one large tiled BigTIFF (default 32768 x 32768).

Generates the image with `segflow.tasks.demo.large.write_large_pair` (grey uint8, zlib, 1024²
tiles; about
3-4 minutes at 32768² on 2 cores), saves a base-16 U-Net bundle (random init: weights do not
matter for speed or memory), runs the CLI in a subprocess and samples the RSS of its whole
process tree (the flow process plus its Dask workers) every 50 ms. Then checks that every block
was written (`segflow.tasks.storage.predictions.block_done`) and that the arrays have the image's
shape. Run:

    .venv/bin/python benchmarks/infer_large_rss.py [--size 32768] [--workers 1 2]

`--workers` lists worker counts, one run each on the same image (default: segflow's own
default, one per two cores on CPU). Smoke test: `--size 2048`. Target: peak RSS of the process
tree <= 3 GB.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import zarr
from ingest_large_rss import watch_peak_rss

from segflow.flows.config import InferConfig
from segflow.models.unet import build_unet
from segflow.tasks.demo.large import write_large_pair
from segflow.tasks.storage.bundle import save_bundle
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import block_done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32768)
    parser.add_argument("--workers", type=int, nargs="*", default=[])
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--block", type=int, default=InferConfig.model_fields["block"].default)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segflow-infer-large-"))
    start = time.perf_counter()
    image, _ = write_large_pair(tmp / "src", size=args.size, seed=0)
    print(f"generated {image.name} {args.size}^2 in {time.perf_counter() - start:.0f} s")
    torch.manual_seed(0)
    model = build_unet(in_channels=1, num_classes=1, depth=4, base_channels=16)
    bundle = save_bundle(
        tmp / "bundle",
        config=model.config,
        state_dicts=[model.state_dict()],
        mean=(128.0,),
        std=(64.0,),
        class_names=("background", "foreground"),
    )
    for workers in args.workers or [None]:
        run(image, tmp / f"pred-{workers or 'default'}.zarr", bundle, workers, args)
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)


def run(image: Path, out: Path, bundle: Path, workers: int | None, args) -> None:
    """Run `segflow infer` as a subprocess, print its time and peak RSS, check the output."""
    command = [
        sys.executable,
        "-m",
        "segflow.flows.cli",
        "infer",
        str(image),
        str(out),
        "--model",
        str(bundle),
        *(["--workers", str(workers)] if workers else []),
        "--precision",
        args.precision,
        "--block",
        str(args.block),
    ]
    start = time.perf_counter()
    log_path = out.with_suffix(".log")  # a file, not a pipe: a full pipe would stall the CLI
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        peak_main, peak_tree = watch_peak_rss(proc)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(log_path.read_text(errors="replace")[-4000:])
        raise SystemExit(f"segflow infer failed with exit code {proc.returncode}")
    regions = blocks((args.size, args.size), args.block)
    missing = [r for r in regions if not block_done(out, image.stem, r, args.block)]
    root = zarr.open_group(out, mode="r")
    shapes = {root[f"{image.stem}/0"].shape, root[f"{image.stem}/labels/mask/0"].shape}
    if missing or shapes != {(1, args.size, args.size)}:
        raise SystemExit(f"{len(missing)} of {len(regions)} blocks missing; shapes {shapes}")
    megapixels = args.size * args.size / 1e6
    print(
        f"segflow infer ({workers or 'default'} workers, precision {args.precision}): "
        f"{wall:.1f} s, "
        f"{megapixels / wall:.2f} MP/s (incl. Prefect, cluster start, store writes)"
    )
    print(
        f"peak RSS: flow process {peak_main / 2**20:.0f} MiB, "
        f"whole process tree {peak_tree / 2**20:.0f} MiB (target <= 3 GB)"
    )
    print(f"all {len(regions)} blocks of {args.block}² written (block_done), shapes {shapes}")


if __name__ == "__main__":
    main()
