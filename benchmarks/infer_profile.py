"""Where segflow's in-process inference time goes: read, model, stitching, write.

Runs `segflow.tasks.infer.blocks.predict_blocks` with one worker (in-process, as `segflow infer`
runs on this machine) on HRF 01_h (re-written as a tiled TIFF) or a synthetic image, with segflow's
defaults unless given, and splits the best of `--repeat` runs into: reading the input window
(`read_mirrored`: TIFF decode + mirror padding), the model (the predictor calls: normalise,
forward, copy out), the rest of `predict_region` (tile cutting, stitching) and `write_block`
(uint8 conversion, two compressed arrays). `--cluster` keeps an idle 2-worker LocalCluster alive
in the process while timing (what the first infer_throughput runs of 2026-11-30 did). Run:

    .venv/bin/python benchmarks/infer_profile.py --precision bf16
    .venv/bin/python benchmarks/infer_profile.py --synthetic 4096 --precision bf16 [--cluster]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from segflow.flows.env import ready_for_prefect, use_local_defaults

use_local_defaults()
ready_for_prefect()

import infer_throughput as bench  # noqa: E402

import segflow.tasks.infer.blocks as block_inference  # noqa: E402
import segflow.tasks.infer.tiling as tiling  # noqa: E402
from segflow.flows.config import InferConfig  # noqa: E402
from segflow.tasks.demo.large import write_large_pair  # noqa: E402
from segflow.tasks.infer.output import prepare_predictions  # noqa: E402
from segflow.tasks.infer.sources import find_sources, forget_opened  # noqa: E402
from segflow.tasks.runtime.cluster import dask_client  # noqa: E402

SPENT: Counter[str] = Counter()


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start

    return wrapper


def instrument() -> None:
    """Wrap the stages segflow's block function calls, where it looks them up."""
    block_inference.write_block = timed("write", block_inference.write_block)
    block_inference.predict_region = timed("predict_region", block_inference.predict_region)
    tiling.read_mirrored = timed("read", tiling.read_mirrored)
    make_predictor = block_inference.make_predictor
    block_inference.make_predictor = lambda *a, **k: timed("model", make_predictor(*a, **k))


def main() -> None:
    defaults = InferConfig.model_fields
    parser = argparse.ArgumentParser()
    parser.add_argument("--hrf", type=Path, default=Path("../shared/data/hrf/images/01_h.jpg"))
    parser.add_argument("--synthetic", type=int, help="a synthetic grey image of this side")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--tile", type=int, default=defaults["tile"].default)
    parser.add_argument("--margin", type=int, default=defaults["margin"].default)
    parser.add_argument("--block", type=int, default=defaults["block"].default)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cluster", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segflow-infer-profile-"))
    if args.synthetic:
        tiff, _ = write_large_pair(tmp / "src", size=args.synthetic, name="synth")
    else:
        tiff = bench.hrf_tiff(args.hrf, tmp / "src" / "hrf.tif")
    source = find_sources(str(tiff))[0][0]
    bundle = bench.make_bundle(tmp / "bundle", source.shape[0])
    instrument()
    with contextlib.ExitStack() as stack:
        if args.cluster:
            stack.enter_context(dask_client(workers=2))
        runs = []
        for _ in range(args.repeat + 1):  # the first call warms up and is not counted
            out = tmp / "out.zarr"
            shutil.rmtree(out, ignore_errors=True)
            bundle_path, _ = prepare_predictions(
                [source],
                str(out),
                model_uri=str(bundle),
                settings={"block": args.block, "probability_dtype": "uint8"},
            )
            config = InferConfig(
                input=str(tiff),
                output=str(out),
                tile=args.tile,
                margin=args.margin,
                block=args.block,
                precision=args.precision,
                device="cpu",
                torch_threads=2,
            )
            settings = replace(  # NCHW in fp32, as this profile has always run it
                config.block_settings(bundle_path, config.parallelism()),
                channels_last=args.precision == "bf16",
            )
            SPENT.clear()
            forget_opened()  # decode the TIFF cold, as a fresh `segflow infer` process does
            start = time.perf_counter()
            block_inference.predict_blocks(
                [source], str(out), settings, workers=1, dask_address=None, log=print
            )
            runs.append((time.perf_counter() - start, dict(SPENT)))
    seconds, parts = min(runs[1:], key=lambda run: run[0])
    megapixels = source.shape[1] * source.shape[2] / 1e6
    stitching = parts["predict_region"] - parts["model"] - parts["read"]
    print(
        f"{tiff.stem} {source.shape}, {args.precision}, tile {args.tile} + {args.margin}, "
        f"block {args.block}{', idle cluster alive' if args.cluster else ''}: "
        f"{seconds:.3f} s ({megapixels / seconds:.2f} MP/s; first call {runs[0][0]:.3f} s)"
    )
    print(
        f"  read {parts['read']:.3f} s, model {parts['model']:.3f} s, "
        f"stitching {stitching:.3f} s, write {parts['write']:.3f} s"
    )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
