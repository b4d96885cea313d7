"""Training throughput: segflow's training loop against a bare PyTorch loop, same model, one run.

Every row trains the same model (U-Net base 32, depth 4, batch norm, 1 logit) with the same
step: batch 8 of 256² patches, bf16 autocast (fp32 with --fp32), channels_last, AdamW
(lr 1e-3, wd 1e-4), BCE + soft Dice. Each row starts from the same initial weights, runs
`--warmup` untimed steps, then `--steps` timed steps; patches/s = steps * 8 / time from the end
of the last warm-up step to the end of the last timed step.

- bare loop: `--pool` 256² patches drawn once (by the same `PatchDataset`) into one in-memory
  tensor before timing; each step indexes a random batch of it, with no reading, normalising
  or augmenting inside the timed steps. This is the compute ceiling.
- segflow, N workers: `segflow.tasks.train.steps.train_one_epoch` (with its cosine LambdaLR and
  disabled
  GradScaler, as `fit` builds them) over
  ``DataLoader(PatchDataset(...), sampler=EpochSampler, batch_size=8, num_workers=N)``
  configured as `fit` does: patches drawn by the balanced sampling plan of the default
  `TrainConfig.sampling()` (foreground oversampling 0.33) from the Zarr store, normalised,
  `Augmentation(elastic=False)` (flips, rot90, brightness/contrast).

The store is `--count` synthetic `segflow.tasks.demo.synth` images of `--size`² (`--channels`
channels, 8 %
foreground), ingested with plain functions (no Prefect). Target: segflow ≥ 0.90× the bare loop.

Run:

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--warmup 3] [--repeat 1]

Default settings take 1.5-2.5 minutes on the project machine (2 cores; 3 loops x 23 steps at
0.9-2 s a step, plus ~10 s to write and ingest the data). Use --repeat 2 (best of 2, loops
interleaved) on a machine that is not idle.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from reference_loop import ingest_store
from torch.utils.data import DataLoader

from segflow.flows.config import TrainConfig
from segflow.models.losses import build_loss
from segflow.models.unet import build_unet
from segflow.tasks.demo.synth import SynthSpec, write_dataset
from segflow.tasks.runtime.device import autocast
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.augment import Augmentation
from segflow.tasks.train.locations import foreground_locations
from segflow.tasks.train.normalization import channel_statistics
from segflow.tasks.train.patches import EpochSampler, PatchDataset
from segflow.tasks.train.sampling import build_plan
from segflow.tasks.train.steps import Compute, Stepper, cosine_schedule, train_one_epoch

BATCH, PATCH = 8, 256


def make_model(in_channels: int, init: dict) -> torch.nn.Module:
    model = build_unet(in_channels=in_channels, num_classes=1, base_channels=32, batch_norm=True)
    model.load_state_dict(init)
    return model.to(memory_format=torch.channels_last)


def rate(stamps: list[float], warmup: int) -> float:
    """Patches/s from step-end timestamps, excluding the warm-up steps."""
    timed = len(stamps) - warmup
    return timed * BATCH / (stamps[-1] - stamps[warmup - 1])


def bare_loop(
    pool: torch.Tensor, targets: torch.Tensor, model, amp, steps: int, warmup: int
) -> float:
    loss_fn = build_loss("bce_dice", num_classes=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    stamps = []
    for _ in range(warmup + steps):
        index = torch.randint(len(pool), (BATCH,), generator=generator)
        images = pool[index].contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast(torch.device("cpu"), amp):
            loss = loss_fn(model(images), targets[index])
        loss.backward()
        optimizer.step()
        loss.item()
        stamps.append(time.perf_counter())
    return rate(stamps, warmup)


def segflow_loop(data: PatchDataset, model, amp, steps: int, warmup: int, workers: int) -> float:
    loss_fn = build_loss("bce_dice", num_classes=1)
    loader = DataLoader(
        data,
        batch_size=BATCH,
        sampler=EpochSampler(len(data)),
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(10_000, 100))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stamps: list[float] = []
    train_one_epoch(
        model,
        loader,
        loss_fn,
        Stepper(optimizer, scheduler, scaler),
        Compute(torch.device("cpu"), amp, channels_last=True),
        on_step=lambda step, value: stamps.append(time.perf_counter()),
    )
    assert len(stamps) == warmup + steps, len(stamps)
    del loader  # stops the worker
    return rate(stamps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pool", type=int, default=64, help="patches held by the bare loop")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    amp = None if args.fp32 else torch.bfloat16
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    try:
        write_dataset(
            tmp / "src",
            count=args.count,
            size=(args.size, args.size),
            spec=SynthSpec(channels=args.channels, fg_fraction=0.08),
            seed=0,
        )
        store_path = str(ingest_store(tmp / "src", tmp / "ds.zarr"))
        store = open_dataset(store_path)
        train_ids = store.samples("train")
        counts = {s: store.class_counts(s) for s in train_ids}
        plan = build_plan(counts, TrainConfig(store=store_path, patch_size=PATCH).sampling())
        locations = {
            s: foreground_locations(store.mask(s), (1,), counts[s], seed=0) for s in train_ids
        }
        norm = channel_statistics(store, train_ids)
        data = PatchDataset(
            store_path,
            plan,
            locations,
            norm,
            length=(args.warmup + args.steps) * BATCH,
            augmentation=Augmentation(elastic=False),
            binary_class=1,
        )
        rng = np.random.default_rng(0)
        pairs = [data[int(k)] for k in rng.integers(0, 10**6, args.pool)]  # segflow's patches
        pool = torch.stack([image for image, _ in pairs])
        targets = torch.stack([target for _, target in pairs])
        torch.manual_seed(0)
        init = build_unet(in_channels=args.channels, num_classes=1).state_dict()

        rates: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.repeat):
            model = make_model(args.channels, init)
            rates["bare loop (in-memory tensor)"].append(
                bare_loop(pool, targets, model, amp, args.steps, args.warmup)
            )
            for workers in args.workers:
                model = make_model(args.channels, init)
                rates[f"segflow, num_workers={workers}"].append(
                    segflow_loop(data, model, amp, args.steps, args.warmup, workers)
                )
        print(
            f"{args.count} synthetic {args.channels}-channel {args.size}² images; U-Net base 32, "
            f"batch {BATCH} x {PATCH}², {'fp32' if amp is None else 'bf16'} + channels_last; "
            f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeat}"
        )
        base = max(rates["bare loop (in-memory tensor)"])
        print(f"{'loop':32s} {'patches/s':>9s} {'vs bare':>7s}  runs   (target: segflow >= 0.90x)")
        for name, runs in rates.items():
            best = max(runs)
            print(f"{name:32s} {best:9.2f} {best / base:6.2f}x  {[round(r, 2) for r in runs]}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
