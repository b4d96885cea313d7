"""The plain PyTorch reference loop, and the helpers the training benchmarks share.

The reference loop is what a competent user writes by hand, with no segflow machinery:

- the same U-Net (`segflow.models.unet.build_unet`, base 32, depth 4, batch norm) and loss
  (`segflow.models.losses.build_loss("bce_dice", num_classes=1)`: BCE + soft Dice);
- the train images held in memory as uint8; each patch is a uniformly chosen image and a
  uniformly chosen 256² window (no foreground oversampling), a random horizontal/vertical flip and
  a random multiple of 90° rotation, normalised per channel with the exact mean/std of all train
  pixels;
- batch 8, AdamW (lr 1e-3, weight decay 1e-4), the learning rate decayed by a cosine of
  ``elapsed / budget`` down to 1 % (no warm-up), autocast to ``AMP`` (what segflow's precision
  ``auto`` picks on this CPU: bf16 where the CPU has native bf16, fp32 otherwise, where emulated
  bf16 is several times slower) + channels_last, no validation;
  it stops at the first step boundary after the wall-clock budget and returns the final weights.

Shared helpers (used by train_throughput.py, train_balance.py and train_quality.py):
`ingest_store` (plain `ingest_pair` + `build_index`, no Prefect), `load_split`,
`predict_probabilities` (tiled whole-image inference) and `test_dice` (pooled Dice).

Evaluation method (`predict_probabilities`, the same function for every model): each test image
is cut into 512² tiles on a grid; every tile is predicted with a 32 px halo of real (or, at the
image border, mirrored) pixels on each side, i.e. a 576² input, and only its 512² core is kept.
So every pixel sees at least 32 px of context and tiles do not overlap in the output. ``AMP``
autocast, eval mode (BatchNorm running statistics). Threshold 0.5 on the foreground probability;
Dice pooled over all test pixels (`segflow.models.metrics.confusion_counts` + `dice_from_counts`).

Run on its own (trains the reference loop only, prints its test Dice):

    .venv/bin/python benchmarks/reference_loop.py --dataset isbi --minutes 10
    .venv/bin/python benchmarks/reference_loop.py --dataset hrf --minutes 10
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segflow.flows.env import ready_for_prefect, use_local_defaults

use_local_defaults()
ready_for_prefect()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import machine  # noqa: E402
from torch import nn  # noqa: E402

from segflow.flows.config import IngestConfig  # noqa: E402
from segflow.models.losses import build_loss  # noqa: E402
from segflow.models.metrics import confusion_counts, dice_from_counts  # noqa: E402
from segflow.models.unet import build_unet  # noqa: E402
from segflow.tasks.ingest.index import build_index  # noqa: E402
from segflow.tasks.ingest.pairs import find_pairs  # noqa: E402
from segflow.tasks.ingest.samples import SampleChecks, ingest_pair  # noqa: E402
from segflow.tasks.runtime.device import resolve_precision  # noqa: E402
from segflow.tasks.storage.dataset import open_dataset  # noqa: E402
from segflow.tasks.storage.dataset_writer import init_store  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# name -> (source folder, foreground_value): ISBI's rare class is the membrane, mask value 0.
DATASETS = {"hrf": (DATA / "hrf", None), "isbi": (DATA / "isbi2012_membrane", 0)}
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
# The autocast dtype of every loop and evaluation here: segflow's precision auto on the CPU.
AMP = resolve_precision("auto", torch.device("cpu"))


def run_record() -> dict:
    """The machine a row was measured on (CPU, cores, commit, date) and the precision it ran:
    the project machine changes."""
    return machine() | {"precision": "fp32" if AMP is None else str(AMP)[6:]}


# --- data ---------------------------------------------------------------------------------------


def ingest_store(
    source: Path,
    store: Path,
    *,
    foreground_value: int | None = None,
    num_classes: int = 2,
    fractions: dict[str, float] = FRACTIONS,
    seed: int = 0,
) -> Path:
    """Ingest `source` (images/ + masks/) into a store of `num_classes` classes (masks of a
    multi-class source hold class ids) with plain functions."""
    settings = IngestConfig(
        source=str(source),
        store=str(store),
        foreground_value=foreground_value,
        num_classes=num_classes,
    )
    init_store(store, class_names=settings.resolved_class_names)
    pairs, rejected = find_pairs(source, settings.pair_layout())
    rules = settings.mask_rules()
    checks = SampleChecks(settings.size_limits(), image_format=None)
    for pair in pairs:
        outcome = ingest_pair(pair, store, rules=rules, checks=checks)
        if outcome.status == "rejected":
            raise RuntimeError(f"{pair.sample_id}: {outcome.reason}")
    build_index(store, rejected=rejected, fractions=fractions, seed=seed)
    return store


def load_split(store: str | Path, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(sample id, image (C, H, W) as stored, mask (H, W) class ids)`` of a split, in memory."""
    ds = open_dataset(store)
    return [
        (s, np.asarray(ds.image(s)[...]), np.asarray(ds.mask(s)[...])) for s in ds.samples(split)
    ]


@dataclass(frozen=True)
class Norm:
    """Per-channel mean and std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, image: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (image.astype(np.float32) - mean) / std


def exact_statistics(images: Sequence[np.ndarray]) -> Norm:
    """Mean and std per channel over every pixel of `images` ((C, H, W) each)."""
    total = total_sq = 0.0
    count = 0
    for image in images:
        flat = image.reshape(image.shape[0], -1).astype(np.float64)
        total = total + flat.sum(1)
        total_sq = total_sq + (flat**2).sum(1)
        count += flat.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return Norm(tuple(float(m) for m in mean), tuple(float(s) for s in std))


# --- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: np.ndarray,
    norm,
    *,
    tile: int = 512,
    halo: int = 32,
    batch: int = 2,
    amp_dtype: torch.dtype | None = AMP,
) -> np.ndarray:
    """Foreground probability ``(H, W)`` float32 of a binary model for one ``(C, H, W)`` image.

    See the module docstring: `tile`² cores, each predicted with a `halo` of context (mirrored
    at the image border); `norm` is anything with ``apply((C, H, W)) -> float32``.
    """
    model.eval()
    x = norm.apply(image)
    _, height, width = x.shape
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    pad = ((0, 0), (halo, halo + rows * tile - height), (halo, halo + cols * tile - width))
    x = np.pad(x, pad, mode="symmetric")
    out = np.zeros((rows * tile, cols * tile), np.float32)
    corners = [(y * tile, c * tile) for y in range(rows) for c in range(cols)]
    size = tile + 2 * halo
    for start in range(0, len(corners), batch):
        group = corners[start : start + batch]
        inputs = torch.from_numpy(np.stack([x[:, y : y + size, c : c + size] for y, c in group]))
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(inputs)
        probs = torch.sigmoid(logits.float())[:, 0, halo : halo + tile, halo : halo + tile]
        for (y, c), prob in zip(group, probs.numpy(), strict=True):
            out[y : y + tile, c : c + tile] = prob
    return out[:height, :width]


def test_dice(
    model: nn.Module,
    samples: Sequence[tuple[str, np.ndarray, np.ndarray]],
    norm,
    *,
    threshold: float = 0.5,
    foreground: int = 1,
) -> float:
    """Dice of the foreground pooled over every pixel of `samples` (see `load_split`)."""
    counts = None
    for _, image, mask in samples:
        prob = predict_probabilities(model, image, norm)
        pred = torch.from_numpy(prob >= threshold)
        target = torch.from_numpy(mask == foreground)
        part = confusion_counts(pred, target, 2)
        counts = part if counts is None else counts + part
    return float(dice_from_counts(counts)[1])


# --- the reference loop -------------------------------------------------------------------------


@dataclass
class ReferenceResult:
    model: nn.Module
    norm: Norm
    patches: int
    steps: int
    seconds: float


def _draw_batch(
    rng: np.random.Generator,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    norm: Norm,
    batch: int,
    patch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(batch):
        i = int(rng.integers(len(images)))
        image, mask = images[i], masks[i]
        height, width = mask.shape
        top = int(rng.integers(0, max(1, height - patch + 1)))
        left = int(rng.integers(0, max(1, width - patch + 1)))
        x = image[:, top : top + patch, left : left + patch]
        y = mask[top : top + patch, left : left + patch]
        if y.shape != (patch, patch):  # smaller than the patch: mirror
            pad = ((0, patch - y.shape[0]), (0, patch - y.shape[1]))
            x, y = np.pad(x, ((0, 0), *pad), mode="symmetric"), np.pad(y, pad, mode="symmetric")
        x = norm.apply(x)
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[:, ::-1, :], y[::-1, :]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
        xs.append(np.ascontiguousarray(x))
        ys.append((y == 1).astype(np.float32)[None])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def train_reference(
    train: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    seconds: float,
    seed: int = 0,
    base_channels: int = 32,
    batch_size: int = 8,
    patch: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    amp_dtype: torch.dtype | None = AMP,
) -> ReferenceResult:
    """Train the reference U-Net on in-memory `train` samples for `seconds` of wall time."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    images = [image for _, image, _ in train]
    masks = [mask for _, _, mask in train]
    norm = exact_statistics(images)
    model = build_unet(
        in_channels=images[0].shape[0], num_classes=1, base_channels=base_channels, batch_norm=True
    ).to(memory_format=torch.channels_last)
    loss_fn = build_loss("bce_dice", num_classes=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    steps = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        factor = 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed / seconds)))
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        x, y = _draw_batch(rng, images, masks, norm, batch_size, patch)
        x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        steps += 1
    return ReferenceResult(model, norm, steps * batch_size, steps, time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="isbi")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    try:
        source, foreground_value = DATASETS[args.dataset]
        store = ingest_store(source, tmp / "ds.zarr", foreground_value=foreground_value)
        result = train_reference(load_split(store, "train"), seconds=args.minutes * 60)
        dice = test_dice(result.model, load_split(store, "test"), result.norm)
        print(f"{'dataset':8s} {'patches':>8s} {'patches/s':>9s} {'test Dice':>9s}")
        print(
            f"{args.dataset:8s} {result.patches:8d} {result.patches / result.seconds:9.2f} "
            f"{dice:9.4f}"
        )
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
