"""Quality at equal time: segflow's training with its defaults against the plain reference loop.

- segflow: what ``segflow train STORE --max-minutes M`` trains, ``TrainConfig(max_minutes=M)``
  and nothing else (base 32, depth 4, batch norm, bce_dice, the balancing plan, AdamW lr 1e-3 wd
  1e-4 with warm-up + cosine over the budget, precision auto (bf16 on a CPU with native bf16,
  else fp32; the reference and the evaluation run the same, `reference_loop.AMP`), channels_last,
  validation after every epoch on at most val_max_tiles tiles), planned as the `train-unet` flow
  plans it (`segflow.flows.train.plan_training` with the pure steps): the data fingerprint sizes
  patch and batch, a speed probe sizes epochs x patches to fill the budget. It trains
  with `segflow.tasks.train.ensemble.fit_member`, what the flow's training task runs, and the
  model kept is segflow's (`TrainConfig.weights`, auto: the last epoch's weights when the budget
  ends the schedule, the best-validation ones after early stopping). Every run also scores each
  of its checkpoints on test: ``best`` (best val Dice), ``last`` and ``ema`` (the moving average
  of the weights, `segflow.tasks.train.averaging`). Left out: MLflow logging and the
  overlay/registration steps after training (none of which is inside the time budget except a
  per-epoch metrics write). The speed probe's time comes out of the budget, as in the flow; the
  rest of the planning (fingerprint, balance step) is timed apart (``plan_seconds`` holds it all).
- the grid (``--arms b16p256,b16p512,b32p256,b32p512``): the same with base channels and patch
  size fixed (16/32 x 256/512); the plan still sizes batch, epochs and patches to the budget.
- reference: `benchmarks/reference_loop.py` (uniform patches, flips/rot90, exact per-channel
  normalisation, same model, loss, optimiser and precision, no validation, final weights).

Each loop runs in its own freshly spawned process (segflow's `fit` switches glibc's malloc to
keeping freed memory, `tasks/runtime/allocator.py`; the reference loop runs with the defaults, as a
hand-written loop would). Both get the same wall-clock budget: the reference for its loop,
segflow for its speed probe and its loop (`fit` may overrun by the validation of its last epoch;
the printed seconds say how much, and patches/s is patches over those seconds, validation
included). Data loading into memory (reference) and the fingerprint and balance step (segflow)
are outside the budget. Both are evaluated
with the same function, `reference_loop.test_dice`: whole test images predicted in 512² tiles with a
32 px halo (576² inputs, mirrored at image borders), the same autocast, threshold 0.5, Dice pooled
over all test pixels. Split: train 0.6 / val 0.2 / test 0.2, seed 0 (HRF: 12/4/4 images,
ISBI: 18/6/6).

Each arm runs once per seed of ``--seeds`` (segflow: ``TrainConfig.seed``, i.e. sampling plan,
init and data order; reference: its batches and init; the split stays seed 0), arms in turns
so that load hits them alike. Every run is appended to ``--out`` as a JSON line as it
finishes, so a partial run survives; the same command again skips the (dataset, arm, seed,
minutes) runs ``--out`` already holds. The summary (also ``--table``, from ``--out`` alone)
gives per dataset and arm the mean ± sample sd of test Dice over the seeds, and for segflow the
same for each checkpoint and the paired differences of ``best`` and ``ema`` to ``last``. One
mean is called ahead of another only when they are apart by more than the larger of their sds;
otherwise level.

Run:

    .venv/bin/python benchmarks/train_quality.py --dataset both --minutes 10 --seeds 0,1,2
    .venv/bin/python benchmarks/train_quality.py --dataset isbi --minutes 10 --seeds 0,1,2
    .venv/bin/python benchmarks/train_quality.py --table   # the summary of --out

`--minutes 10 --dataset both --seeds 0,1,2` takes about 2 h 15 min (two datasets x three seeds x
two 10-minute runs, plus ingest and test prediction; HRF ingest and test prediction take a few
minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from reference_loop import (
    DATASETS,
    ingest_store,
    load_split,
    run_record,
    test_dice,
    train_reference,
)
from spawned import in_fresh_process

from segflow.flows.config import TrainConfig
from segflow.flows.train import PURE_STEPS, plan_training
from segflow.models.unet import UNet
from segflow.tasks.train.balance import Balance
from segflow.tasks.train.budget import BudgetPlan
from segflow.tasks.train.checkpoints import CANDIDATES, load_checkpoint
from segflow.tasks.train.ensemble import fit_member
from segflow.tasks.train.keeping import Kept
from segflow.tasks.train.loop import EpochReport, FitResult

GRID = {
    f"b{base}p{patch}": {"base_channels": base, "patch_size": patch}
    for base in (16, 32)
    for patch in (256, 512)
}
SEGFLOW_ARMS = {"segflow": {}} | GRID
ARMS = (*SEGFLOW_ARMS, "reference")


@dataclass
class SegflowResult:
    model: UNet
    balance: Balance
    fit: FitResult
    kept: Kept  # which checkpoint `model` holds, and the val Dice of each
    reports: list[EpochReport]
    seconds: float  # wall time of fit (the budgeted part)
    folder: Path
    config: TrainConfig  # as planned
    plan: BudgetPlan | None
    plan_seconds: float  # the planning: fingerprint, balance step, speed probe

    def checkpoints(self) -> dict[str, UNet]:
        """Each checkpoint the run wrote (best, last, ema), loaded into a copy of the model."""
        models = {}
        for name in CANDIDATES:
            if (self.folder / f"{name}.pt").exists():
                models[name] = copy.deepcopy(self.model)
                models[name].load_state_dict(load_checkpoint(self.folder / f"{name}.pt")["model"])
        return models

    @property
    def patches(self) -> int:
        return round(sum(r.patches_per_second * r.seconds for r in self.reports))


def train_segflow(config: TrainConfig, folder: Path) -> SegflowResult:
    """The flow's planning and `segflow.tasks.train.ensemble.fit_member` with `config` (member
    0), no MLflow."""
    started = time.monotonic()
    config, balance, plan = plan_training(config, PURE_STEPS)
    config = config.with_loss_for(balance.out_channels)
    settings = config.members(
        config.unet(balance.in_channels, balance.out_channels),
        balance.levers.batch_factor,
        None if plan is None else plan.to_dict(),
    )
    planning = time.monotonic() - started
    reports: list[EpochReport] = []
    started = time.monotonic()
    model, result, kept = fit_member(balance, 0, folder, settings, on_epoch=reports.append)
    seconds = time.monotonic() - started
    return SegflowResult(
        model, balance, result, kept, reports, seconds, folder, config, plan, planning
    )


def segflow_run(name: str, arm: str, store: Path, work: Path, minutes: float, seed: int) -> dict:
    """Train `arm` (segflow's defaults, or a grid point) with `seed`; test each checkpoint."""
    torch.set_num_threads(2)
    test = load_split(store, "test")
    config = TrainConfig(
        store=str(store), workdir=str(work), max_minutes=minutes, seed=seed, **SEGFLOW_ARMS[arm]
    )
    seg = train_segflow(config, work / f"{name}-{arm}-seed{seed}")
    started = time.monotonic()
    dice = {n: test_dice(m, test, seg.balance.normalization) for n, m in seg.checkpoints().items()}
    return {
        "dataset": name,
        "arm": arm,
        "seed": seed,
        "minutes": minutes,
        "patches": seg.patches,
        "seconds": round(seg.seconds, 1),
        "plan_seconds": round(seg.plan_seconds, 1),
        "settings": {
            k: getattr(seg.config, k)
            for k in ("base_channels", "patch_size", "batch_size", "epochs", "patches_per_epoch")
        },
        "planned": None if seg.plan is None else list(seg.plan.planned),
        "test_dice": round(dice[seg.kept.weights], 4),
        "kept": seg.kept.weights,
        "checkpoints_test_dice": {n: round(d, 4) for n, d in dice.items()},
        "checkpoints_val_dice": {n: round(d, 4) for n, d in seg.kept.candidates.items()},
        "epochs": seg.fit.epochs_done,
        "best_epoch": seg.fit.best_epoch + 1,
        "stopped": seg.fit.stopped,
        "training_steps_seconds": round(sum(r.seconds for r in seg.reports), 1),
        "test_seconds": round(time.monotonic() - started, 1),
        **run_record(),
    }


def reference_run(name: str, store: Path, minutes: float, seed: int) -> dict:
    """Train the plain reference loop with `seed` and test its final weights."""
    torch.set_num_threads(2)
    test = load_split(store, "test")
    ref = train_reference(load_split(store, "train"), seconds=minutes * 60, seed=seed)
    started = time.monotonic()
    dice = test_dice(ref.model, test, ref.norm)
    return {
        "dataset": name,
        "arm": "reference",
        "seed": seed,
        "minutes": minutes,
        "patches": ref.patches,
        "seconds": round(ref.seconds, 1),
        "test_dice": round(dice, 4),
        "steps": ref.steps,
        "test_seconds": round(time.monotonic() - started, 1),
        **run_record(),
    }


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample sd (NaN for fewer than two values)."""
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return statistics.mean(values), sd


def compare(a: str, dice_a: Sequence[float], b: str, dice_b: Sequence[float]) -> str:
    """``<a> ahead of <b> by d`` when the means are apart by more than the larger sample sd,
    else ``level``; with one seed there is no spread, hence no verdict."""
    (mean_a, sd_a), (mean_b, sd_b) = spread(dice_a), spread(dice_b)
    gap, noise = mean_a - mean_b, max(sd_a, sd_b)
    if noise != noise:  # NaN: one seed
        return f"{a} - {b} = {gap:+.4f}; one seed, no spread: no verdict"
    if abs(gap) <= noise:
        return f"{a} and {b} level: {gap:+.4f} within the spread {noise:.4f}"
    ahead, behind = (a, b) if gap > 0 else (b, a)
    return f"{ahead} ahead of {behind} by {abs(gap):.4f} (spread {noise:.4f})"


def _pm(values: Sequence[float]) -> str:
    mean, sd = spread(values)
    return f"{mean:.4f} ± {sd:.4f}"


def summary(rows: Sequence[dict]) -> list[str]:
    """Per dataset and budget: each arm's test Dice mean ± sd over seeds, segflow's per
    checkpoint, and the verdicts."""
    groups: dict[tuple[str, float], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[(row["dataset"], row["minutes"])][row["arm"]].append(row)
    lines = [
        "test Dice: 512² tiles + 32 px halo, thr 0.5; mean ± sample sd over seeds",
        f"{'dataset':8s} {'min':>5s} {'arm':10s} {'seeds':>5s} {'patches/s':>9s} "
        f"{'test Dice':>17s}  per run",
    ]
    verdicts = []
    for (name, minutes), arms in sorted(groups.items()):
        for arm in ARMS:
            runs = sorted(arms.get(arm, []), key=lambda r: r["seed"])
            if not runs:
                continue
            speed = statistics.mean(r["patches"] / r["seconds"] for r in runs)
            each = " ".join(f"{r['test_dice']:.4f}" for r in runs)
            dice = [r["test_dice"] for r in runs]
            lines.append(
                f"{name:8s} {minutes:5g} {arm:10s} {len(runs):5d} {speed:9.2f} {_pm(dice):>17s}  "
                f"{each}"
            )
        for arm in ARMS:
            if arm != "segflow" and arms.get(arm) and arms.get("segflow"):
                scores = [[r["test_dice"] for r in arms[x]] for x in ("segflow", arm)]
                verdicts.append(
                    f"{name} {minutes:g} min: {compare('segflow', scores[0], arm, scores[1])}"
                )
        lines += _checkpoint_lines(name, minutes, arms.get("segflow", []), verdicts)
    return lines + verdicts


def _checkpoint_lines(
    name: str, minutes: float, runs: list[dict], verdicts: list[str]
) -> list[str]:
    """segflow's checkpoints, each scored on test, and their paired differences to ``last``."""
    tested = [r["checkpoints_test_dice"] for r in runs if "checkpoints_test_dice" in r]
    names = [n for n in CANDIDATES if tested and all(n in t for t in tested)]
    lines = []
    for n in names:
        dice = [t[n] for t in tested]
        each = " ".join(f"{d:.4f}" for d in dice)
        kept = sum(r["kept"] == n for r in runs)
        lines.append(
            f"{'':14s}   {n:8s} {len(dice):5d} {'':9s} {_pm(dice):>17s}  {each}  (kept {kept}x)"
        )
    for n in names:
        if n != "last" and "last" in names:
            diff = [t[n] - t["last"] for t in tested]
            lines.append(f"{'':14s}   {n} - last, paired: {_pm(diff)}")
    if len(names) > 1:
        best = max(names, key=lambda n: statistics.mean(t[n] for t in tested))
        for n in names:
            if n != best:
                a, b = ([t[x] for t in tested] for x in (best, n))
                verdicts.append(f"{name} {minutes:g} min checkpoints: {compare(best, a, n, b)}")
    return lines


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["hrf", "isbi", "both"], default="both")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; one run per arm each")
    parser.add_argument("--arms", default="segflow,reference", help=f"comma-separated of {ARMS}")
    parser.add_argument("--out", type=Path, default=Path("work/bench-quality/results.jsonl"))
    parser.add_argument("--table", action="store_true", help="only print the summary of --out")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.table:
        print("\n".join(summary(read_rows(args.out))))
        return
    names = ["hrf", "isbi"] if args.dataset == "both" else [args.dataset]
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        parser.error(f"unknown arms {sorted(unknown)}; choose from {ARMS}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["dataset"], r["arm"], r["seed"], r["minutes"]) for r in read_rows(args.out)}
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    try:
        for name in names:
            source, foreground_value = DATASETS[name]
            store = ingest_store(source, tmp / f"{name}.zarr", foreground_value=foreground_value)
            for seed in seeds:
                for arm in arms:  # arms in turns, so load hits them alike
                    if (name, arm, seed, args.minutes) in done:
                        print(f"{name} {arm} seed {seed}: in {args.out}, skipped", flush=True)
                        continue
                    if arm in SEGFLOW_ARMS:
                        work = tmp / f"work-{name}-{arm}-{seed}"
                        row = in_fresh_process(
                            segflow_run, name, arm, store, work, args.minutes, seed
                        )
                    else:
                        row = in_fresh_process(reference_run, name, store, args.minutes, seed)
                    print(json.dumps(row), flush=True)
                    with args.out.open("a") as out:
                        out.write(json.dumps(row) + "\n")
        wanted = [
            r
            for r in read_rows(args.out)
            if r["dataset"] in names and r["minutes"] == args.minutes and r["seed"] in seeds
        ]
        print("\n".join(summary(wanted)))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
