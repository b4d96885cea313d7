"""``segflow synth``: seeded synthetic image/mask datasets (the demo's, the tests' and the
benchmarks' data), as a sub-command of the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_synth(ns: argparse.Namespace) -> int:
    """Write the pairs (and the large BigTIFF pair with ``--large``); exit status 0."""
    from dataclasses import replace

    from segflow.tasks.demo.large import write_large_pair
    from segflow.tasks.demo.synth import SynthSpec, write_dataset

    spec = SynthSpec(
        channels=ns.channels,
        dtype=ns.dtype,
        fg_fraction=ns.fg_fraction,
        num_classes=ns.num_classes,
        objects=ns.objects,
    )
    pairs = write_dataset(
        ns.out_dir, count=ns.count, size=ns.size, spec=spec, seed=ns.seed, image_format=ns.format
    )
    print(f"wrote {len(pairs)} image/mask pairs under {ns.out_dir}")
    if ns.large:
        # The large pair is binary whatever --num-classes asks of the others.
        binary = replace(spec, num_classes=2)
        image, mask = write_large_pair(ns.out_dir, size=ns.large, spec=binary, seed=ns.seed)
        print(f"wrote {ns.large}x{ns.large} tiled BigTIFF {image} and mask {mask}")
    return 0


def _image_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256), ``"320x480"`` -> (320, 480)."""
    sides = text.lower().split("x")
    if len(sides) not in (1, 2) or not all(side.isdigit() and int(side) > 0 for side in sides):
        raise argparse.ArgumentTypeError(f"{text!r} is not N or HxW (positive integers)")
    return (int(sides[0]), int(sides[-1]))


def add_synth_command(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser("synth", help="generate a synthetic image/mask dataset")
    synth.add_argument("out_dir", metavar="OUT_DIR", type=Path)
    synth.add_argument("--count", type=int, default=12, help="number of pairs (default 12)")
    synth.add_argument(
        "--size", type=_image_size, default="256", help="N or HxW in pixels (default 256)"
    )
    synth.add_argument("--channels", type=int, default=1, choices=(1, 3, 4))
    synth.add_argument("--dtype", default="uint8", choices=("uint8", "uint16"))
    synth.add_argument(
        "--fg-fraction", type=float, default=0.08, help="target foreground fraction (default 0.08)"
    )
    synth.add_argument("--num-classes", type=int, default=2, help="classes incl. background")
    synth.add_argument(
        "--objects",
        default="mixed",
        choices=("mixed", "thin", "spots"),
        help="blobs and curves, only thin curves, or only small clustered spots (default mixed)",
    )
    synth.add_argument("--format", default="png", choices=("png", "tif", "jpg"))
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--large",
        type=int,
        default=0,
        metavar="SIZE",
        help="also write one SIZE x SIZE tiled BigTIFF pair, tile by tile",
    )
    synth.set_defaults(run=run_synth)
