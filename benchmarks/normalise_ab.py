"""What normalising tiles in PyTorch saves: segflow's predictor against the same forward fed
by NumPy normalisation (``(x.astype(float32) - mean) / std``, the earlier implementation).

Both run in one process, taking turns over `--rounds` rounds of 6 fresh uint8 tiles, after a
warm-up call each: an RGB 1088×1520 tile in bf16 + channels_last (HRF's widest segflow tile)
and a grey 1088² tile in fp32 (NCHW), base-16 U-Net, BatchNorm folded, 2 torch threads.

    .venv/bin/python benchmarks/normalise_ab.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from infer_throughput import make_bundle

from segflow.tasks.infer.blocks import make_predictor, worker_model
from segflow.tasks.runtime.device import autocast


def numpy_predictor(bundle, amp, channels_last: bool):
    """The forward of segflow's predictor, fed by NumPy normalisation."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mean = np.asarray(bundle.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(bundle.std, dtype=np.float32)[None, :, None, None]

    @torch.inference_mode()
    def predict(tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy((tiles.astype(np.float32) - mean) / std)
        with autocast(torch.device("cpu"), amp):
            probs = bundle.ensemble(x.contiguous(memory_format=fmt)).float()
        return (probs / 1).numpy()

    return predict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="segflow-norm-"))
    cpu = torch.device("cpu")
    for precision, channels, shape in (("bf16", 3, (1088, 1520)), ("fp32", 1, (1088, 1088))):
        bf16 = precision == "bf16"
        path = make_bundle(tmp / f"bundle{channels}", channels)
        bundle = worker_model(str(path), precision, cpu, bf16)
        amp = torch.bfloat16 if bf16 else None
        predictors = {
            "NumPy": numpy_predictor(bundle, amp, bf16),
            "PyTorch (segflow)": make_predictor(bundle, cpu, amp, channels_last=bf16, tta=False),
        }
        rng = np.random.default_rng(0)
        tiles = [rng.integers(0, 255, (1, channels, *shape), dtype=np.uint8) for _ in range(6)]
        seconds: dict[str, list[float]] = {name: [] for name in predictors}
        for predict in predictors.values():
            predict(tiles[0])
        for _ in range(args.rounds):
            for name, predict in predictors.items():
                start = time.perf_counter()
                for tile in tiles:
                    predict(tile)
                seconds[name].append((time.perf_counter() - start) / len(tiles))
        for name, values in seconds.items():
            print(
                f"{precision} {channels}x{shape[0]}x{shape[1]} {name:18s} "
                f"best {min(values):.4f} s/tile, median {np.median(values):.4f}"
            )


if __name__ == "__main__":
    main()
