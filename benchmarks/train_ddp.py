"""Data-parallel training throughput: patches/s of segflow's training with 1, 2, ... ranks.

Every row trains ensemble member 0 of the same `TrainConfig` through
`segflow.tasks.train.ensemble.fit_member` (the path `segflow train --nproc N` takes: rank 0
here, N - 1 helper ranks started by `distributed_launch.spread`, gloo on the CPU, NCCL on
CUDA) on the same synthetic store: U-Net `--base-channels` (default 16), depth 4, batch norm,
`--patch`² patches, effective batch `--batch` (each rank takes batch / N), `--precision auto`,
channels_last, one DataLoader worker per rank, BCE + soft Dice. patches/s is what `fit`
reports per epoch (the patches of all ranks over rank 0's training seconds, validation
excluded); a row gives the median over the epochs after the first (warm-up).

On the CPU the ranks share the cores (each gets cores / N threads), so on the 2-core project
machine 2 ranks are not expected to be faster: the row shows what the gradient all-reduce and
the extra process cost. On CUDA use `--device cuda --nprocs 1 <GPUs>`.

Run:

    .venv/bin/python benchmarks/train_ddp.py [--nprocs 1 2] [--epochs 4] [--patches 64]

Default settings take ~3-5 minutes on the project machine (2 rows x 4 epochs of 64 patches of
256² at ~9-20 patches/s, plus validation and ~10 s to write and ingest the data). A smoke run:
`--epochs 2 --patches 16 --patch 64 --batch 4 --count 6 --size 128` (under a minute).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from reference_loop import ingest_store

from segflow.flows.config import TrainConfig
from segflow.tasks.demo.synth import SynthSpec, write_dataset
from segflow.tasks.train.balance import balance_classes
from segflow.tasks.train.ensemble import fit_member
from segflow.tasks.train.loop import EpochReport


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2], help="ranks per row")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--patches", type=int, default=64, help="patches per epoch")
    parser.add_argument("--patch", type=int, default=256, help="side of a patch")
    parser.add_argument("--batch", type=int, default=8, help="effective batch (all ranks)")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--count", type=int, default=16, help="synthetic images")
    parser.add_argument("--size", type=int, default=512, help="side of a synthetic image")
    return parser.parse_args()


def row(store: Path, workdir: Path, args: argparse.Namespace, nproc: int) -> dict[str, float]:
    """Train member 0 on `nproc` ranks; its epochs' patches/s and the wall time."""
    config = TrainConfig(
        store=str(store),
        workdir=str(workdir),
        epochs=args.epochs,
        patches_per_epoch=args.patches,
        patch_size=args.patch,
        batch_size=args.batch,
        base_channels=args.base_channels,
        device=args.device,
        patience=0,
        val_max_tiles=8,
        target_share=0.0,  # the plan as set: the same batch and patches in every row
        nproc=nproc,
    )
    balance = balance_classes(str(store), config.sampling())
    settings = config.members(config.unet(balance.in_channels, balance.out_channels))
    reports: list[EpochReport] = []
    started = time.perf_counter()
    fit_member(balance, 0, workdir / f"nproc_{nproc}", settings, on_epoch=reports.append)
    speeds = [r.patches_per_second for r in reports[1:]] or [reports[0].patches_per_second]
    return {"speed": statistics.median(speeds), "wall": time.perf_counter() - started}


def main() -> None:
    args = parse()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src"
        spec = SynthSpec(fg_fraction=0.08)
        write_dataset(source, count=args.count, size=(args.size, args.size), spec=spec, seed=0)
        store = ingest_store(source, Path(tmp) / "ds.zarr")
        print("| ranks | per-rank batch | patches/s (median) | wall s |")
        print("|---|---|---|---|")
        for nproc in args.nprocs:
            result = row(store, Path(tmp) / "work", args, nproc)
            per_rank = args.batch // nproc
            print(f"| {nproc} | {per_rank} | {result['speed']:.1f} | {result['wall']:.0f} |")


if __name__ == "__main__":
    main()
