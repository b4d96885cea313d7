"""Seam error of tiled inference against margin: random-init and trained models.

Dice between the mask `segflow infer` stores (tiles of `--tile` on a global grid, overlap-tile
with each `--margins` value, and gaussian) and the mask of one forward pass over the whole
image by the same network (BatchNorm folded, as segflow runs it; mirror-padded by the margin,
as segflow pads image borders, so only the seams differ; threshold 0.5), plus segflow's time
for each setting and what folding alone changes.

- model: `--bundle DIR` (a segflow model bundle, e.g. ``OUT/model`` of a prediction store, or
  a bundle fetched from MLflow); or, with `--train-seconds N`, infer_throughput.py's base-16
  U-Net trained N s on the (whole, uncropped) image and its mask (`--mask`, needed with
  `--image`); else that U-Net random-init with its head x20 (confident outputs, many pixels
  near the threshold: the stress case);
- image: `--image` (any input segflow reads: TIFF, PNG/JPEG), cropped to its top-left
  `--crop`² pixels, else the synthetic 2048² tiled TIFF of infer_throughput.py.

    .venv/bin/python benchmarks/infer_seam.py --margins 0 16 32 48
    .venv/bin/python benchmarks/infer_seam.py --margins 0 16 32 48 --train-seconds 120 \\
        --image ../shared/data/hrf/images/01_h.jpg --mask ../shared/data/hrf/masks/01_h.png
    .venv/bin/python benchmarks/infer_seam.py --bundle /tmp/hrf-work/predictions/m.zarr/model \\
        --image ../shared/data/hrf/images/01_h.jpg --margins 32 48 64
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch
import zarr
from infer_throughput import AMP, make_bundle, seam_dice, segflow_run, trained_model

from segflow.tasks.demo.large import write_large_pair
from segflow.tasks.infer.blocks import resolve_parallelism
from segflow.tasks.infer.sources import find_sources
from segflow.tasks.storage.bundle import load_bundle


def crop_tiff(image: Path, crop: int, out: Path) -> Path:
    """The top-left crop² pixels of `image` as a tiled TIFF (channels last)."""
    source = find_sources(str(image))[0][0]
    pixels = source.region(0, min(crop, source.shape[1]), 0, min(crop, source.shape[2]))
    data = pixels.transpose(1, 2, 0)
    tifffile.imwrite(
        out,
        data if data.shape[2] > 1 else data[..., 0],
        tile=(256, 256),
        photometric="rgb" if data.shape[2] == 3 else "minisblack",
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--crop", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--margins", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--precision", default="bf16", choices=list(AMP))
    parser.add_argument("--mask", type=Path, help="the image's mask, for --train-seconds")
    parser.add_argument("--train-seconds", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="segflow-seam-"))
    if args.image:
        tiff, mask = crop_tiff(args.image, args.crop, tmp / "input.tif"), args.mask
    else:
        tiff, mask = write_large_pair(tmp / "src", size=args.crop, seed=0, name="synth")
    source = find_sources(str(tiff))[0][0]
    if args.bundle:
        bundle_path = args.bundle
    elif args.train_seconds > 0:
        if mask is None:
            parser.error("--train-seconds with --image needs --mask")
        trained, loss = trained_model(args.image or tiff, mask, args.train_seconds)
        print(f"trained {args.train_seconds:.0f} s on 256² crops, final loss {loss:.3f}")
        bundle_path = make_bundle(tmp / "bundle", source.shape[0], trained)
    else:
        bundle_path = make_bundle(tmp / "bundle", source.shape[0])
    bundle = load_bundle(bundle_path)
    model = bundle.ensemble.eval()
    amp = AMP[args.precision]
    fmt = torch.channels_last if args.precision == "bf16" else torch.contiguous_format
    model.to(memory_format=fmt)
    print(f"image {source.shape}, model {bundle_path}, {args.precision}, tile {args.tile}")
    settings = {
        "tile": args.tile,
        "overlap": 0.25,
        "batch": resolve_parallelism("cpu", workers=1, batch=None, torch_threads=None).batch,
        "precision": args.precision,
        "device": "cpu",
        "channels_last": args.precision == "bf16",
        "block": 2048,
        "torch_threads": 2,
    }
    runs = [("overlap-tile", m) for m in args.margins] + [("gaussian", 32)]
    segflow_run(source, tmp / "warm.zarr", bundle_path, settings | {"blend": "gaussian"}, 1, None)
    for blend, margin in runs:
        out = tmp / f"{blend}-{margin}.zarr"
        seconds, _ = segflow_run(
            source, out, bundle_path, settings | {"blend": blend, "margin": margin}, 1, None
        )
        dice, folding = seam_dice(model, source, out, bundle, amp, fmt, pad=margin)
        mp = source.shape[1] * source.shape[2] / 1e6
        foreground = float(np.mean(zarr.open_group(out)[f"{source.name}/labels/mask/0"][:]))
        print(
            f"{blend:<12} margin {margin:3d}: seam Dice {dice:.4f}  {seconds:6.1f} s "
            f"({mp / seconds:.2f} MP/s), foreground {foreground:.3f}, BatchNorm folding "
            f"alone: Dice {folding:.4f}"
        )


if __name__ == "__main__":
    main()
