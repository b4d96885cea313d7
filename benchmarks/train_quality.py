"""Quality at equal time: segflow's training with its defaults against the plain reference loop.

- segflow: `flows.config.TrainConfig` defaults (read from the class, not copied: base 32,
  depth 4, batch norm, patch 256, batch 8, bce_dice, balance with fg_oversample 0.33, AdamW
  lr 1e-3 wd 1e-4 with warm-up + cosine stretched over the time budget, precision auto = bf16
  here, channels_last, num_workers 1, 256 patches per epoch, validation after every epoch on
  at most val_max_tiles tiles), with only ``max_minutes = --minutes`` and ``epochs = 10000`` (so
  the budget is what stops it). It runs the same code path as the `train-unet` flow's training
  task: `tasks.train.prepare_balance` then `tasks.training.fit` built exactly as
  `tasks.train.train_member` builds it, and the model kept is segflow's: the best-validation
  checkpoint (`best.pt`). Left out: MLflow logging and the overlay/registration steps after
  training (none of which is inside the time budget except a per-epoch metrics write).
- reference: `benchmarks/reference_loop.py` (uniform patches, flips/rot90, exact per-channel
  normalisation, same model, loss, optimiser and precision, no validation, final weights).

Both get the same wall-clock budget for their training loop (segflow's `fit` may overrun it by
the validation of its last epoch; the printed seconds say how much). Data loading into memory
(reference) and the balance step (segflow) are outside the budget. Both are evaluated with the
same function, `reference_loop.test_dice`: whole test images predicted in 512² tiles with a
32 px halo (576² inputs, mirrored at image borders), bf16 autocast, threshold 0.5, Dice pooled
over all test pixels. Split: train 0.6 / val 0.2 / test 0.2, seed 0 (HRF: 12/4/4 images,
ISBI: 18/6/6).

Run:

    .venv/bin/python benchmarks/train_quality.py --dataset both --minutes 10
    .venv/bin/python benchmarks/train_quality.py --dataset hrf --minutes 10
    .venv/bin/python benchmarks/train_quality.py --dataset isbi --minutes 10

`--minutes 10 --dataset both` takes about 45 minutes (two datasets x two 10-minute runs, plus
ingest and test prediction; HRF ingest and test prediction take a few minutes).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from reference_loop import DATASETS, ingest_store, load_split, test_dice, train_reference

from flows.config import TrainConfig
from models.losses import build_loss
from models.unet import UNet, UNetConfig
from tasks.augment import Augmentation
from tasks.dataset import open_dataset
from tasks.device import resolve_device, resolve_precision
from tasks.patches import PatchDataset
from tasks.train import Balance, prepare_balance
from tasks.training import EpochReport, FitResult, fit, load_checkpoint


@dataclass
class SegflowResult:
    model: UNet
    balance: Balance
    fit: FitResult
    reports: list[EpochReport]
    seconds: float  # wall time of fit (the budgeted part)

    @property
    def patches(self) -> int:
        return round(sum(r.patches_per_second * r.seconds for r in self.reports))


def train_segflow(config: TrainConfig, folder: Path) -> SegflowResult:
    """The balance step and `fit` with `config`, as `tasks.train.train_member` does (member 0)."""
    balance = prepare_balance(
        config.store,
        patch_size=config.patch_size,
        fg_oversample=config.fg_oversample,
        balance=config.balance,
        class_weights=config.class_weights,
        weight_cap=config.weight_cap,
        target_class=config.target_class,
        seed=config.seed,
    )
    unet = UNetConfig(
        in_channels=balance.in_channels,
        num_classes=balance.out_channels,
        depth=config.depth,
        base_channels=config.base_channels,
        batch_norm=config.batch_norm,
    )
    plan = replace(balance.plan, seed=config.seed)
    torch.manual_seed(config.seed)
    model = UNet(unet)
    device = resolve_device(config.device)
    weights = plan.class_weights
    binary = balance.binary_class is not None
    loss_fn = build_loss(
        config.loss,
        num_classes=1 if binary else len(balance.class_names),
        pos_weight=(weights[1] / weights[0]) if (weights and binary) else None,
        class_weights=torch.tensor(weights) if (weights and not binary) else None,
    ).to(device)
    data = PatchDataset(
        config.store,
        plan,
        balance.locations,
        balance.normalization,
        length=config.patches_per_epoch,
        augmentation=Augmentation(elastic=config.elastic),
        binary_class=balance.binary_class,
    )
    reports: list[EpochReport] = []
    started = time.monotonic()
    result = fit(
        model,
        data,
        store=open_dataset(config.store),
        val_ids=balance.val_ids,
        normalization=balance.normalization,
        loss_fn=loss_fn,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        device=device,
        amp_dtype=resolve_precision(config.precision, device),
        channels_last=config.channels_last,
        num_workers=config.num_workers,
        checkpoint_dir=folder,
        config=config.model_dump(),
        patience=config.patience,
        max_seconds=None if config.max_minutes is None else config.max_minutes * 60,
        val_tile=plan.patch_size,
        val_max_tiles=config.val_max_tiles,
        binary_class=balance.binary_class,
        on_epoch=reports.append,
    )
    seconds = time.monotonic() - started
    model.load_state_dict(load_checkpoint(folder / "best.pt")["model"])
    return SegflowResult(model.cpu().float(), balance, result, reports, seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["hrf", "isbi", "both"], default="both")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    names = ["hrf", "isbi"] if args.dataset == "both" else [args.dataset]
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    rows = []
    try:
        for name in names:
            source, foreground_value = DATASETS[name]
            store = ingest_store(source, tmp / f"{name}.zarr", foreground_value=foreground_value)
            test = load_split(store, "test")
            config = TrainConfig(
                store=str(store), workdir=str(tmp / "work"), max_minutes=args.minutes, epochs=10_000
            )
            seg = train_segflow(config, tmp / "work" / name)
            seg_dice = test_dice(seg.model, test, seg.balance.normalization)
            rows.append(
                (
                    name,
                    "segflow defaults",
                    seg.patches,
                    seg.seconds,
                    seg_dice,
                    f"{seg.fit.epochs_done} epochs, best val Dice {seg.fit.best_dice:.4f} "
                    f"at epoch {seg.fit.best_epoch + 1}",
                )
            )
            del seg
            ref = train_reference(load_split(store, "train"), seconds=args.minutes * 60)
            ref_dice = test_dice(ref.model, test, ref.norm)
            rows.append(
                (name, "reference loop", ref.patches, ref.seconds, ref_dice, f"{ref.steps} steps")
            )
            del ref
            print(f"{name}: done", flush=True)
        print(f"budget {args.minutes} min per run; test Dice: 512² tiles + 32 px halo, thr 0.5")
        print(
            f"{'dataset':8s} {'loop':17s} {'patches':>8s} {'train s':>8s} {'patches/s':>9s} "
            f"{'test Dice':>9s}  notes"
        )
        for name, loop, patches, seconds, dice, notes in rows:
            print(
                f"{name:8s} {loop:17s} {patches:8d} {seconds:8.1f} {patches / seconds:9.2f} "
                f"{dice:9.4f}  {notes}"
            )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
