"""Test Dice of finished `train_imbalance.py` runs at the threshold ``segflow infer`` applies.

`train_imbalance.py` scored its first runs at 0.5 only; a registered model carries the
threshold its kept weights score best at on validation (`segflow.tasks.train.keeping`), and
loss weights (``pos_weight``) shift where that is. This loads each run's ``last.pt`` (what
``weights=auto`` keeps after a full schedule, as in those runs) from
``--data/work/SET-ARM-SEED-*/member_0``, picks the threshold on the validation tiles training
used, and scores the test split (every pixel, 256² tiles) at 0.5 and at that threshold. Rows
(JSON lines) go to stdout. One run per (set, arm, seed) in ``--data`` (the folders do not name
the epochs).

    .venv/bin/python benchmarks/imbalance_threshold.py --set spots1 --arms off,plan --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from train_imbalance import ARMS, SYNTHETIC, at_threshold, store_of, test_scores

from segflow.flows.config import TrainConfig
from segflow.models.unet import UNet
from segflow.tasks.train.balance import balance_classes
from segflow.tasks.train.checkpoints import load_checkpoint
from segflow.tasks.train.keeping import member_scores


def rescore(name: str, arm: str, seed: int, data: Path) -> dict:
    """Test Dice at 0.5 and at the val-chosen threshold of run (`name`, `arm`, `seed`)."""
    folders = sorted((data / "work").glob(f"{name}-{arm}-{seed}-*/member_0"))
    if len(folders) != 1:
        raise SystemExit(f"error: {len(folders)} runs of {name} {arm} seed {seed} in {data}/work")
    (folder,) = folders
    store = store_of(name, data)
    config = TrainConfig(store=str(store), workdir=str(data / "work"), seed=seed, **ARMS[arm])
    balance = balance_classes(config.store, config.sampling())
    settings = config.members(config.unet(balance.in_channels, balance.out_channels))
    model = UNet(settings.unet)
    model.load_state_dict(load_checkpoint(folder / "last.pt")["model"])
    threshold, val_dice = member_scores(model, balance, settings.loop).best_threshold()
    scores = test_scores(model, store, balance, config)
    return {
        "set": name,
        "arm": arm,
        "seed": seed,
        "folder": folder.parent.name,
        "val_threshold": threshold,
        "val_dice_at_threshold": round(val_dice, 4),
        "test_dice": round(scores.dice, 4),
        "test_dice_at_val_threshold": at_threshold(scores, threshold),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="spots1", choices=[n for n in SYNTHETIC if n != "rare3"])
    parser.add_argument("--arms", default="off,plan", help="of off, sampling, weights, plan")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=Path("work/bench-imbalance"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if unknown := set(args.arms.split(",")) - {"off", "sampling", "weights", "plan"}:
        parser.error(f"one model per run only: not {sorted(unknown)}")
    for arm in args.arms.split(","):
        for seed in map(int, args.seeds.split(",")):
            print(json.dumps(rescore(args.set, arm, seed, args.data)), flush=True)


if __name__ == "__main__":
    main()
