"""Flip test-time augmentation: its gain in test Dice, paired per trained model.

Every run folder ``<set>-<arm>-<seed>-<ns>/member_0`` that `train_imbalance.py` left under
``--data/work`` for the chosen sets, and that trained all its epochs, is scored with its
checkpoint ``--weights`` (default ``last``: what ``weights=auto`` keeps when the schedule runs
its course, as in those runs) on the set's TEST split, twice, with that benchmark's scorer
(segflow's validation scorer, every pixel, 256² tiles, threshold 0.5, pooled): as is, and as
segflow infers with ``--tta`` (the mean probability over the identity and the three flips,
``make_predictor`` in `tasks/infer/blocks.py`). The gain is the paired difference; the table
gives its mean ± sample sd over the models, and each model's gain.

    .venv/bin/python benchmarks/tta_gain.py --data /path/to/bench-imbalance --sets hrf isbi
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import nn
from train_imbalance import store_of, test_scores

from segflow.flows.config import TrainConfig
from segflow.models.unet import UNet, UNetConfig
from segflow.tasks.train.balance import balance_classes
from segflow.tasks.train.checkpoints import load_checkpoint

FLIPS = [(), (2,), (3,), (2, 3)]  # the flips of segflow's --tta


class FlipMean(nn.Module):
    """A binary model's mean probability over `FLIPS`, as a logit (the scorer applies the
    sigmoid)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in FLIPS:
            xi = torch.flip(x, dims) if dims else x
            p = torch.sigmoid(self.model(xi).float())
            p = torch.flip(p, dims) if dims else p
            total = p if total is None else total + p
        return torch.logit((total / len(FLIPS)).clamp(1e-6, 1 - 1e-6))


def _finished(folder: Path) -> bool:
    """Whether the run in `folder` trained all its epochs (not one killed midway)."""
    if not (folder / "last.pt").exists():
        return False
    last = load_checkpoint(folder / "last.pt")
    return last["epoch"] == last["config"]["epochs"] - 1


def score_pair(folder: Path, store: Path, weights: str) -> dict:
    """Test Dice of `folder`'s checkpoint without and with flip TTA."""
    checkpoint = load_checkpoint(folder / f"{weights}.pt")
    last = load_checkpoint(folder / "last.pt")  # the config lives in the resume checkpoint
    model = UNet(UNetConfig.from_dict(last["config"]["unet"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    config = TrainConfig(store=str(store))
    balance = balance_classes(config.store, config.sampling())
    scores = {
        name: test_scores(candidate, store, balance, config).dice
        for name, candidate in (("plain", model), ("tta", FlipMean(model)))
    }
    return {"run": folder.parent.name, "weights": weights, **scores}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("work/bench-imbalance"))
    parser.add_argument("--sets", nargs="+", default=["hrf", "isbi"])
    parser.add_argument("--weights", default="last", choices=["best", "last"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("work/bench-imbalance/tta.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| set | models | test Dice | with flip TTA | gain mean ± sd | gains |")
    print("|---|---|---|---|---|---|")
    for name in args.sets:
        store = store_of(name, args.data)
        folders = sorted((args.data / "work").glob(f"{name}-*/member_0"))
        rows = [score_pair(f, store, args.weights) for f in folders if _finished(f)]
        with args.out.open("a") as out:
            for row in rows:
                out.write(json.dumps({"set": name, **row}) + "\n")
        if not rows:
            continue
        gains = [r["tta"] - r["plain"] for r in rows]
        sd = statistics.stdev(gains) if len(gains) > 1 else float("nan")
        print(
            f"| {name} | {len(rows)} | {statistics.mean(r['plain'] for r in rows):.4f} | "
            f"{statistics.mean(r['tta'] for r in rows):.4f} | "
            f"{statistics.mean(gains):+.4f} ± {sd:.4f} | "
            + " / ".join(f"{g:+.4f}" for g in gains)
            + " |"
        )


if __name__ == "__main__":
    main()
