"""Quality at equal time: segflow's training with its defaults against the plain reference loop.

- segflow: `segflow.flows.config.TrainConfig` defaults (read from the class, not copied: base 32,
  depth 4, batch norm, patch 256, batch 8, bce_dice, balance with foreground oversampling 0.33,
  AdamW lr 1e-3 wd 1e-4 with warm-up + cosine stretched over the time budget, precision auto = bf16
  here, channels_last, num_workers 1, 256 patches per epoch, validation after every epoch on
  at most val_max_tiles tiles), with only ``max_minutes = --minutes`` and ``epochs = 10000`` (so
  the budget is what stops it). It runs the same code path as the `train-unet` flow's training
  task: `segflow.tasks.train.balance.balance_classes` then `segflow.tasks.train.loop.fit` built
  exactly as
  `segflow.tasks.train.ensemble.train_model` builds it, and the model kept is segflow's
  (`TrainConfig.weights`,
  auto: the last epoch's weights when the budget ends the schedule, the best-validation ones
  after early stopping). The test Dice of the other checkpoint is printed beside it. Left
  out: MLflow logging and the overlay/registration steps after training (none of which is
  inside the time budget except a per-epoch metrics write).
- reference: `benchmarks/reference_loop.py` (uniform patches, flips/rot90, exact per-channel
  normalisation, same model, loss, optimiser and precision, no validation, final weights).

Each loop runs in its own freshly spawned process (segflow's `fit` switches glibc's malloc to
keeping freed memory, `tasks/runtime/allocator.py`; the reference loop runs with the defaults, as a
hand-written loop would). Both get the same wall-clock budget for their training loop
(segflow's `fit` may overrun it by the validation of its last epoch; the printed seconds say
how much, and patches/s is patches over those seconds, validation included). Data loading into
memory (reference) and the balance step (segflow) are outside the budget. Both are evaluated
with the same function, `reference_loop.test_dice`: whole test images predicted in 512² tiles with a
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
import copy
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from reference_loop import DATASETS, ingest_store, load_split, test_dice, train_reference
from spawned import in_fresh_process

from segflow.flows.config import TrainConfig
from segflow.models.unet import UNet
from segflow.tasks.train.balance import Balance, balance_classes
from segflow.tasks.train.checkpoints import load_checkpoint
from segflow.tasks.train.ensemble import fit_member
from segflow.tasks.train.loop import EpochReport, FitResult


@dataclass
class SegflowResult:
    model: UNet
    balance: Balance
    fit: FitResult
    kept: str  # which checkpoint `model` holds: "best" or "last"
    reports: list[EpochReport]
    seconds: float  # wall time of fit (the budgeted part)
    folder: Path

    def other(self) -> tuple[str, UNet]:
        """The checkpoint segflow did not keep, loaded into a copy of the model."""
        name = "best" if self.kept == "last" else "last"
        model = copy.deepcopy(self.model)
        model.load_state_dict(load_checkpoint(self.folder / f"{name}.pt")["model"])
        return name, model

    @property
    def patches(self) -> int:
        return round(sum(r.patches_per_second * r.seconds for r in self.reports))


def train_segflow(config: TrainConfig, folder: Path) -> SegflowResult:
    """The balance step and `segflow.tasks.train.ensemble.fit_member` with `config` (member 0),
    no MLflow."""
    balance = balance_classes(config.store, config.sampling())
    settings = config.members(
        config.unet(balance.in_channels, balance.out_channels), balance.levers.batch_factor
    )
    reports: list[EpochReport] = []
    started = time.monotonic()
    model, result, kept = fit_member(balance, 0, folder, settings, on_epoch=reports.append)
    seconds = time.monotonic() - started
    return SegflowResult(model, balance, result, kept, reports, seconds, folder)


Row = tuple[str, str, int, float, float, str]  # dataset, loop, patches, seconds, Dice, notes


def segflow_row(name: str, store: Path, work: Path, minutes: float) -> Row:
    """Train with segflow's defaults and test the kept weights (and, in the notes, the other)."""
    torch.set_num_threads(2)
    test = load_split(store, "test")
    config = TrainConfig(store=str(store), workdir=str(work), max_minutes=minutes, epochs=10_000)
    seg = train_segflow(config, work / name)
    started = time.monotonic()
    seg_dice = test_dice(seg.model, test, seg.balance.normalization)
    seg_eval = time.monotonic() - started
    other, other_model = seg.other()
    other_dice = test_dice(other_model, test, seg.balance.normalization)
    in_epochs = sum(r.seconds for r in seg.reports)
    notes = (
        f"{seg.fit.epochs_done} epochs ({in_epochs:.0f} s training steps, the rest "
        f"validation + checkpoints), best val Dice {seg.fit.best_dice:.4f} at epoch "
        f"{seg.fit.best_epoch + 1}, last {seg.fit.last_dice:.4f}; kept the {seg.kept} "
        f"weights (test Dice of the {other}: {other_dice:.4f}); test prediction {seg_eval:.0f} s"
    )
    return name, "segflow defaults", seg.patches, seg.seconds, seg_dice, notes


def reference_row(name: str, store: Path, minutes: float) -> Row:
    """Train the plain reference loop and test its final weights."""
    torch.set_num_threads(2)
    test = load_split(store, "test")
    ref = train_reference(load_split(store, "train"), seconds=minutes * 60)
    started = time.monotonic()
    ref_dice = test_dice(ref.model, test, ref.norm)
    notes = f"{ref.steps} steps; test prediction {time.monotonic() - started:.0f} s"
    return name, "reference loop", ref.patches, ref.seconds, ref_dice, notes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["hrf", "isbi", "both"], default="both")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    names = ["hrf", "isbi"] if args.dataset == "both" else [args.dataset]
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    rows = []
    try:
        for name in names:
            source, foreground_value = DATASETS[name]
            store = ingest_store(source, tmp / f"{name}.zarr", foreground_value=foreground_value)
            rows.append(in_fresh_process(segflow_row, name, store, tmp / "work", args.minutes))
            rows.append(in_fresh_process(reference_row, name, store, args.minutes))
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
