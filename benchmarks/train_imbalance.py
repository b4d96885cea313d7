"""Class imbalance: the balancing remedies, alone and as segflow's default plan, on rare-class data.

Data sets (generated once under --data, reused):
- ``thin``: 120 RGB 320x480 images of thin curves (cracks) at 1.5 % foreground, with as many
  half-contrast look-alikes in the background (`segflow synth --objects thin`);
- ``spots1`` / ``spots03``: 20 RGB 2048² images of small clustered spots (2-10 px radius,
  lesions) at 1 % and 0.3 % foreground, with look-alikes (`--objects spots`);
- ``hrf`` / ``isbi``: the shared HRF vessels and ISBI 2012 membranes (membrane = foreground).
Each is ingested with plain functions (train 0.6 / val 0.2 / test 0.2, seed 0).

Arms (``TrainConfig`` defaults except):
- ``off``: ``balance=False`` (uniform samples and positions, no loss weights);
- ``sampling``: ``target_share=0`` (per-sample weights + 33 % foreground-centred draws, no
  other lever: segflow's balancing before the plan);
- ``weights``: ``balance=False, class_weights=True`` (inverse-frequency ``pos_weight``, cap 10);
- ``ensemble``: ``balance=False, ensemble=3`` seeds, each member a third of the patches,
  probabilities averaged;
- ``plan``: the defaults (the balancing plan: target 10 % per class, levers as measured);
- ``dedicated``: on ``rare3`` (24 RGB 1024² images, 3 classes: blobs 7.6 %, thin curves
  0.2 %), a binary model of class 2 (``target_class=2``) with the defaults, against ``plan``'s
  multi-class model scored on class 2.

Test Dice on ``rare3`` is class 2's. Every run trains the same number of pixels, whatever the
machine's load: ``--epochs`` x 256 patches of 256² (20 x 256 is the default schedule, about 10
minutes on the project machine);
a plan with smaller windows draws proportionally more, smaller patches. Test Dice: segflow's
validation scorer on the TEST split, every pixel, 256² tiles, threshold 0.5, pooled; also at the
threshold the registered model would carry (its members' val-chosen ones, averaged). Each run
in a fresh spawned process; results are appended to --out (JSON lines) as they finish.

    .venv/bin/python benchmarks/train_imbalance.py --set spots03 --arms off,plan --seeds 0,1,2
    .venv/bin/python benchmarks/train_imbalance.py --table          # mean ± sd of --out
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from reference_loop import DATASETS, ingest_store
from spawned import in_fresh_process

from segflow.flows.config import TrainConfig
from segflow.models.ensemble import ProbabilityEnsemble
from segflow.models.metrics import SWEEP_BINS
from segflow.tasks.demo.synth import SynthSpec, write_dataset
from segflow.tasks.runtime.device import resolve_precision
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.balance import Balance, balance_classes
from segflow.tasks.train.ensemble import fit_member
from segflow.tasks.train.validation import ValidationScores, validate

SYNTHETIC = {
    "thin": (120, (320, 480), SynthSpec(channels=3, fg_fraction=0.015, objects="thin"), 0),
    "spots1": (20, (2048, 2048), SynthSpec(channels=3, fg_fraction=0.01, objects="spots"), 0),
    "spots03": (20, (2048, 2048), SynthSpec(channels=3, fg_fraction=0.003, objects="spots"), 1),
    "rare3": (
        24,
        (1024, 1024),
        SynthSpec(channels=3, fg_fraction=0.08, num_classes=3, class_shares=(0.95, 0.05)),
        2,
    ),
}
# The class scored on each multi-class set: its rare one.
SCORED = {"rare3": 2}
ARMS = {
    "off": {"balance": False},
    "sampling": {"target_share": 0.0},
    "weights": {"balance": False, "class_weights": True},
    "ensemble": {"balance": False, "ensemble": 3},
    "plan": {},
    "dedicated": {"target_class": 2},  # multi-class sets: a binary model of the rare class
}


def store_of(name: str, data: Path) -> Path:
    """The ingested store of data set `name` under `data` (built on first use)."""
    store = data / f"{name}.zarr"
    if store.exists():
        return store
    if name in SYNTHETIC:
        count, size, spec, seed = SYNTHETIC[name]
        source, foreground_value = data / name, None
        write_dataset(source, count=count, size=size, spec=spec, seed=seed)
        num_classes = spec.num_classes
    else:
        (source, foreground_value), num_classes = DATASETS[name], 2
    return ingest_store(source, store, foreground_value=foreground_value, num_classes=num_classes)


class _MeanLogit(torch.nn.Module):
    """An ensemble's mean probability as a logit, for a scorer that applies the sigmoid."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.mean = ProbabilityEnsemble(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.mean(x).clamp(1e-6, 1 - 1e-6))


def run_arm(
    name: str, arm: str, seed: int, store: Path, work: Path, epochs: int, threads: int
) -> dict:
    """Train arm `arm` with `seed` on `store` and score it on the test split."""
    torch.set_num_threads(threads)
    overrides = ARMS[arm]
    members = overrides.get("ensemble", 1)
    config = TrainConfig(
        store=str(store), workdir=str(work), epochs=epochs // members, seed=seed, **overrides
    )
    balance = balance_classes(config.store, config.sampling())
    unet = config.unet(balance.in_channels, balance.out_channels)
    settings = config.members(unet, balance.levers.batch_factor)
    started = time.monotonic()
    models, val, thresholds = [], [], []
    for k in range(members):
        folder = work / f"{name}-{arm}-{seed}-{time.time_ns()}" / f"member_{k}"
        model, _, kept = fit_member(balance, k, folder, settings)
        models.append(model)
        val.append(kept.val_dice)
        thresholds.append(kept.threshold)
    seconds = time.monotonic() - started
    model = models[0] if members == 1 else _MeanLogit(models)
    scores = test_scores(model, store, balance, config)
    threshold = round(statistics.mean(thresholds), 2)  # the registered model's rule
    return {
        "set": name,
        "arm": arm,
        "seed": seed,
        "epochs": epochs,
        "seconds": round(seconds, 1),
        "val_dice": round(statistics.mean(val), 4),
        "test_dice": round(_scored(scores, name, balance.binary_class), 4),
        "val_threshold": threshold,
        "test_dice_at_val_threshold": at_threshold(scores, threshold),
        "test_trivial_dice": round(max(scores.trivial_dice), 4),
        "fg_natural": round(balance.fractions_before[-1], 4),
        "fg_sampled": round(balance.fractions_after[-1], 4),
        "levers": balance.levers.params()["balance.levers"],
        "loss_weights": balance.levers.params()["balance.loss_weights"],
        "window": balance.levers.window,
    }


def test_scores(model: torch.nn.Module, store: Path, balance: Balance, config: TrainConfig):
    """`model`'s scores on every pixel of the TEST split of `store` (256² tiles, threshold
    0.5, pooled), at the config's precision on the CPU."""
    ds = open_dataset(store)
    return validate(
        model,
        ds,
        ds.samples("test"),
        balance.normalization,
        tile=config.patch_size,
        amp_dtype=resolve_precision(config.precision, torch.device("cpu")),
        max_tiles=10**9,
        binary_class=balance.binary_class,
    )


def _scored(scores, name: str, binary_class: int | None) -> float:
    """Test Dice of the set's scored class: the model's own (binary) or that class's Dice."""
    if name in SCORED and binary_class is None:
        return scores.per_class_dice[SCORED[name]]
    return scores.dice


def at_threshold(scores: ValidationScores, threshold: float) -> float | None:
    """Test Dice at the val-chosen `threshold` (what ``segflow infer`` applies); None for a
    multi-class model (argmax, no threshold)."""
    if scores.sweep is None:
        return None
    return round(scores.sweep[round(threshold * SWEEP_BINS) - 1], 4)


def table(path: Path) -> None:
    """Mean ± sample sd of test Dice per set and arm, with the runs' seeds; also at the
    val-chosen threshold where every run recorded it."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["set"], row["arm"], row["epochs"])].append(row)
    print(
        "| set | arm | epochs | seeds | sampled fg | levers | test Dice mean ± sd | runs "
        "| at the val threshold |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, arm, epochs), runs in sorted(groups.items()):
        dice = [r["test_dice"] for r in runs]
        at = [r.get("test_dice_at_val_threshold") for r in runs]
        print(
            f"| {name} | {arm} | {epochs} | {len(runs)} | {runs[0]['fg_sampled']:.4f} | "
            f"{runs[0]['levers']} | **{_pm(dice)}** | {' / '.join(f'{d:.3f}' for d in dice)} "
            f"| {_pm(at) if None not in at else '—'} |"
        )


def _pm(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="spots03", choices=[*SYNTHETIC, *DATASETS])
    parser.add_argument("--arms", default="off,plan")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20, help="x 256 patches of 256² per run")
    parser.add_argument("--data", type=Path, default=Path("work/bench-imbalance"))
    parser.add_argument("--out", type=Path, default=Path("work/bench-imbalance/results.jsonl"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if args.table:
        table(args.out)
        return
    args.data.mkdir(parents=True, exist_ok=True)
    store = store_of(args.set, args.data)
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):  # arms in turns, so load hits them alike
            row = in_fresh_process(
                run_arm, args.set, arm, seed, store, args.data / "work", args.epochs, args.threads
            )
            print(json.dumps(row), flush=True)
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
