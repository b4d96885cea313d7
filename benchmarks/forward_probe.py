"""Probes behind segflow's CPU settings: one forward pass or one training step, timed alone.

Each row runs in a freshly spawned process, because the malloc setting is process-wide and
cannot be undone (`tasks/runtime/allocator.py`):

- infer rows: a base-16, depth-4 U-Net (random init, BatchNorm with non-trivial statistics)
  forwards `--tile`² single-channel tiles (1088 = segflow's 1024 tile + 2 x 32 margin), batch
  `--batch`, 2 torch threads; fp32 in PyTorch's default layout (NCHW) and channels_last
  (NHWC, segflow's default), bf16 autocast in NHWC; the model as given or with BatchNorm
  folded (`segflow.models.fusion.fold_batch_norm`); glibc's malloc defaults or freed memory kept
  (`segflow.tasks.runtime.allocator.retain_freed_memory`). Seconds per tile over `--repeat`
  forwards after one
  warm-up, minor page faults and kernel CPU seconds of those forwards.
- train rows: segflow's default U-Net (base 32, depth 4, BatchNorm), batch 8 of 256² patches,
  bf16 autocast + channels_last, AdamW, BCE + Dice, 12 steps after 3 warm-up steps, with
  glibc's defaults or freed memory kept. Patches per second, page faults, kernel CPU seconds.
- tile side: megapixels per second and peak RSS of the process for one RGB tile forward of
  1088/1120 (segflow's 1024 tile + 32/48 margin) and 2112/2144 (a 2048 tile), folded model,
  channels_last, freed memory kept.
- folding accuracy: mask Dice of bf16 forwards (as given, folded) and of the folded fp32
  forward against the fp32 forward of the model as given.

Run (about 2 minutes on the project machine, idle):

    .venv/bin/python benchmarks/forward_probe.py
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from spawned import in_fresh_process
from torch import nn

from segflow.models.fusion import fold_batch_norm
from segflow.models.losses import build_loss
from segflow.models.unet import build_unet
from segflow.tasks.runtime.allocator import retain_freed_memory


def _usage() -> tuple[int, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


def probe_model(head_scale: float = 1.0) -> nn.Module:
    """The probes' base-16 U-Net in eval mode, 2 torch threads, with BatchNorm statistics and
    affine parameters as after training (so folding has work to do); `head_scale` multiplies
    the head's weights (x20: confident outputs, many pixels near the threshold)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_unet(in_channels=1, num_classes=1, depth=4, base_channels=16).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
        model.head.weight.mul_(head_scale)
    return model


def infer_row(
    precision: str, layout: str, folded: bool, kept: bool, tile: int, batch: int, repeat: int
):
    """(seconds per tile, minor page faults, kernel CPU s) of `repeat` forwards; `layout`
    "NHWC" is channels_last (weights and input), "NCHW" PyTorch's default."""
    if kept:
        retain_freed_memory()
    model = probe_model()
    if folded:
        model = fold_batch_norm(model)
    bf16 = precision == "bf16"
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.randn(batch, 1, tile, tile).contiguous(memory_format=fmt)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)
        faults, kernel = _usage()
        start = time.perf_counter()
        for _ in range(repeat):
            model(x)
        seconds = time.perf_counter() - start
    faults_after, kernel_after = _usage()
    return seconds / (repeat * batch), faults_after - faults, kernel_after - kernel


def tile_side_row(side: int, precision: str, repeat: int = 3) -> tuple[float, float]:
    """(megapixels per second, peak RSS MiB) of one RGB `side`² tile forward through the
    folded model, channels_last, freed memory kept, as segflow's workers run it."""
    retain_freed_memory()
    bf16 = precision == "bf16"
    fmt = torch.channels_last
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_unet(in_channels=3, num_classes=1, depth=4, base_channels=16).eval()
    model = fold_batch_norm(model).to(memory_format=fmt)
    x = torch.randn(1, 3, side, side).contiguous(memory_format=fmt)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)
        start = time.perf_counter()
        for _ in range(repeat):
            model(x)
        seconds = (time.perf_counter() - start) / repeat
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return side * side / 1e6 / seconds, peak


def folding_accuracy(size: int = 1024) -> dict[str, float]:
    """Mask Dice of bf16 forwards, as given and folded, against the fp32 forward as given (the
    `probe_model` with the head x20, so many pixels sit near the threshold)."""
    model = probe_model(head_scale=20.0)
    x = torch.randn(1, 1, size, size)

    def mask(net: nn.Module, bf16: bool) -> torch.Tensor:
        net = net.to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return net(x.contiguous(memory_format=torch.channels_last)) > 0

    truth = mask(model, bf16=False)
    folded = fold_batch_norm(model)
    return {
        name: float(2 * (m & truth).sum() / (m.sum() + truth.sum()))
        for name, m in [
            ("fp32 folded", mask(folded, bf16=False)),
            ("bf16 as given", mask(model, bf16=True)),
            ("bf16 folded", mask(folded, bf16=True)),
        ]
    }


def train_row(kept: bool, steps: int = 12, warmup: int = 3):
    """(patches per second, minor page faults, kernel CPU s) of `steps` training steps."""
    if kept:
        retain_freed_memory()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_unet(in_channels=1, num_classes=1, depth=4, base_channels=32)
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = build_loss("bce_dice", num_classes=1)
    x = torch.randn(8, 1, 256, 256).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(8, 1, 256, 256) > 0.7).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    faults, kernel = _usage()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    faults_after, kernel_after = _usage()
    return 8 * steps / seconds, faults_after - faults, kernel_after - kernel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tile", type=int, default=1088)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    print(f"forward of {args.batch} x {args.tile}² tile(s), base-16 U-Net, 2 threads")
    print(
        f"{'prec':5s} {'layout':6s} {'model':9s} {'malloc':12s} {'s/tile':>7s} {'faults':>9s} "
        f"{'sys s':>6s}"
    )
    for precision, layout in (("fp32", "NCHW"), ("fp32", "NHWC"), ("bf16", "NHWC")):
        for folded in (False, True):
            for kept in (False, True):
                per_tile, faults, kernel = in_fresh_process(
                    infer_row, precision, layout, folded, kept, args.tile, args.batch, args.repeat
                )
                print(
                    f"{precision:5s} {layout:6s} {'folded' if folded else 'as given':9s} "
                    f"{'kept' if kept else 'glibc':12s} {per_tile:7.3f} {faults:9d} {kernel:6.1f}"
                )
    print("\ntile side (output tile + 2 x 32 or 48 margin), folded, freed memory kept, RGB:")
    print(f"{'side':>5s} {'prec':5s} {'MP/s':>6s} {'peak RSS MiB':>13s}")
    for side in (1088, 1120, 2112, 2144):
        for precision in ("fp32", "bf16"):
            rate, peak = in_fresh_process(tile_side_row, side, precision)
            print(f"{side:5d} {precision:5s} {rate:6.2f} {peak:13.0f}")
    print("\nmask Dice against the fp32 forward of the model as given (1024², head x20):")
    for name, value in in_fresh_process(folding_accuracy).items():
        print(f"  {name:14s} {value:.4f}")
    print("\ntraining step, base-32 U-Net, batch 8 x 256², bf16, 2 threads")
    print(f"{'malloc':12s} {'patches/s':>9s} {'faults':>9s} {'sys s':>6s}")
    for kept in (False, True):
        rate, faults, kernel = in_fresh_process(train_row, kept)
        print(f"{'kept' if kept else 'glibc':12s} {rate:9.2f} {faults:9d} {kernel:6.1f}")


if __name__ == "__main__":
    main()
