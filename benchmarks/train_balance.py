"""Balancing matters: segflow trained with and without class balancing, at equal training time.

Datasets:
- synth: `segflow.tasks.demo.synth.write_dataset(count=24, size=(1024, 1024),
  spec=SynthSpec(fg_fraction=0.01))`,
  grey, 1 %
  foreground (blobs + thin curves). Not 256² images: a 256² patch of a 256² image is the whole
  image, so centring patches on foreground could not change what the model sees;
- isbi: ISBI 2012 membranes as the rare class (``foreground_value=0``; about 22 % of pixels).

Each dataset is ingested once (plain `ingest_pair` + `build_index`, train 0.6 / val 0.2 /
test 0.2, seed 0). Then two runs with `segflow.flows.config.TrainConfig` defaults except:
``base_channels=16`` (instead of 32, 2-3x faster on this CPU, so more epochs fit in the budget),
``max_minutes=--minutes``, ``epochs=10000`` (the budget stops training), and
- balance on: ``balance=True`` (foreground oversampling 0.33, per-sample weights: the default);
- balance off: ``balance=False`` (uniform sample weights, uniform patch positions).
Everything else is the same: seed 0, bf16 autocast + channels_last, bce_dice, AdamW + cosine,
validation each epoch, the weights `TrainConfig.weights` keeps (see `train_quality.train_segflow`,
which runs the `train-unet` flow's balance step and `fit` without Prefect/MLflow).

Test Dice reuses segflow's own validation scorer on the TEST split:
``segflow.tasks.train.validation.validate(model, store, test_ids, ..., tile=256,
max_tiles=10**9)``, i.e. every
test pixel, predicted in non-overlapping 256² tiles without a halo (mirrored padding past the
image edge), threshold 0.5, Dice pooled over all test pixels. "fg in patches" is the
foreground share of the pixels of 256 patches drawn by each run's sampling plan
(`segflow.tasks.train.sampling.sampled_class_fractions`, as computed by the balance step); "fg
uniform" is the
same estimate for uniform sampling, i.e. the dataset's own foreground share.

Run:

    .venv/bin/python benchmarks/train_balance.py [--minutes 4] [--dataset synth|isbi|both]

Defaults take about 20 minutes (2 datasets x 2 runs x 4 minutes, plus ingest and scoring).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from reference_loop import DATASETS, ingest_store
from train_quality import train_segflow

from segflow.flows.config import TrainConfig
from segflow.tasks.demo.synth import SynthSpec, write_dataset
from segflow.tasks.runtime.device import resolve_precision
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.validation import validate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["synth", "isbi", "both"], default="both")
    parser.add_argument("--minutes", type=float, default=4.0, help="training time per run")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    names = ["synth", "isbi"] if args.dataset == "both" else [args.dataset]
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    rows = []
    try:
        for name in names:
            if name == "synth":
                source, foreground_value = tmp / "synth", None
                sparse = SynthSpec(fg_fraction=0.01)
                write_dataset(source, count=24, size=(1024, 1024), spec=sparse, seed=0)
            else:
                source, foreground_value = DATASETS[name]
            store = ingest_store(source, tmp / f"{name}.zarr", foreground_value=foreground_value)
            ds = open_dataset(store)
            test_ids = ds.samples("test")
            for balance in (True, False):
                config = TrainConfig(
                    store=str(store),
                    workdir=str(tmp / "work"),
                    base_channels=args.base_channels,
                    balance=balance,
                    max_minutes=args.minutes,
                    epochs=10_000,
                    seed=args.seed,
                )
                run = train_segflow(config, tmp / "work" / f"{name}-{balance}")
                device = torch.device("cpu")
                scores = validate(
                    run.model,
                    ds,
                    test_ids,
                    run.balance.normalization,
                    tile=config.patch_size,
                    amp_dtype=resolve_precision(config.precision, device),
                    max_tiles=10**9,
                    binary_class=run.balance.binary_class,
                )
                fg = run.balance.binary_class or 1
                rows.append(
                    (
                        name,
                        "on" if balance else "off",
                        run.balance.fractions_before[fg],
                        run.balance.fractions_after[fg],
                        run.patches,
                        run.seconds,
                        run.fit.epochs_done,
                        run.fit.best_dice,
                        scores.dice,
                    )
                )
                print(f"{name} balance {'on' if balance else 'off'}: done", flush=True)
        print(
            f"U-Net base {args.base_channels}, {args.minutes} min of training per run, seed "
            f"{args.seed}; test Dice over all test pixels (256² tiles, no halo), thr 0.5"
        )
        print(
            f"{'dataset':8s} {'balance':7s} {'fg uniform':>10s} {'fg in patches':>13s} "
            f"{'patches':>7s} {'train s':>7s} {'epochs':>6s} {'val Dice':>8s} {'test Dice':>9s}"
        )
        for name, on, before, after, patches, seconds, epochs, val, test in rows:
            print(
                f"{name:8s} {on:7s} {before:10.4f} {after:13.4f} {patches:7d} {seconds:7.1f} "
                f"{epochs:6d} {val:8.4f} {test:9.4f}"
            )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
