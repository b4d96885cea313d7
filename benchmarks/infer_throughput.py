"""Inference throughput: segflow's tiled Dask inference against MONAI and the bare-model floor.

Same model (a base-16, depth-4 U-Net; weights do not matter for speed), same normalisation,
same precision, memory layout and torch threads on every row of one (image, precision) group.
The 1-channel model is trained for `--train-seconds` (120) on 256² crops of the smallest
synthetic image and its mask, so the seam check below sees a network that segments; the RGB
model (HRF) is random init. Throughput is megapixels of the input image per second:

- floor: the bare forward pass of **the network segflow's workers run**
  (`segflow.tasks.infer.blocks.worker_model`: BatchNorm folded by
  `segflow.models.fusion.fold_batch_norm`, weights in segflow's memory layout
  `segflow.flows.config.infer.CHANNELS_LAST`), at segflow's `--precision` (fp32, or bf16
  autocast via `segflow.tasks.runtime.device.resolve_precision`), with segflow's default
  torch threads and batch for one worker (`resolve_parallelism`), over segflow's output tiles
  of the image (`--tile` pieces, the last of an axis absorbing a remainder under half a tile,
  as `segflow.tasks.storage.grid.pieces` cuts them) *without* the margin, inputs already
  normalised and in memory, one process: the least compute any tiled method running that
  network must do. The "/floor" column divides by it.
- floor, unfolded (`--unfolded-floor`, on by default): the same forward of the model as
  given (BatchNorm not folded), the floor of the tables before 2026-12; its column
  "/unfold." gives the earlier definition of the ratio in the same run.
- MONAI (`--monai`, on by default): `monai.inferers.sliding_window_inference` on the whole
  image as one in-memory tensor (N=1), roi = tile, MONAI's default overlap 0.25 with
  mode="gaussian", best of sw_batch_size 1 and 8, the model as given (unfolded) in the same
  layout and precision; only the call is timed. "MONAI" runs in a fresh spawned process with
  glibc's default malloc, as MONAI's users run it (the /MONAI column); "MONAI kept-memory"
  runs in this process after segflow's warm-up switched malloc to keeping freed memory
  (`tasks/runtime/allocator.py`), i.e. MONAI given segflow's allocator fix (the /MONAI*
  column);
- segflow xW: `segflow.tasks.infer.blocks.predict_blocks` (the plain function the flow calls)
  with W workers of cores/W torch threads, overlap-tile blend (output tile `--tile`, margin
  `--margin`; defaults are `InferConfig`'s), on a tiled TIFF written beforehand, with the
  settings `InferConfig.block_settings` builds (segflow's default path). Its time
  **includes reading and decoding the TIFF and writing the Zarr prediction store**
  (probabilities uint8 + mask): that is the job.
  One worker runs in-process (predict_blocks starts no cluster for it), and no cluster is alive
  while it, the floors and MONAI are timed; W >= 2 runs afterwards on a Dask LocalCluster
  started once before timing (its start is printed separately) and warmed up.
  `prepare_predictions` (store creation, bundle copy) is not timed; its cost is printed.
- segflow gaussian x1 (`--gaussian`, on by default): as segflow x1 with blend="gaussian",
  overlap 0.25 (MONAI's geometry).

Every method runs segflow's layout (channels_last at both precisions); `--fp32-nchw` runs
every method, segflow included, in NCHW for fp32 rows (the setting of the tables before
2026-12; not segflow's default). "tiles" is the number of tile forwards each method makes;
segflow's overlap-tile forwards are `tile + 2 margin` wide, the floor's `tile` (the same
output tiles; `segflow.tasks.storage.grid.pieces`).

Seam error (synthetic sizes <= `--seam-max`): Dice between segflow's stored mask and the
mask of one forward of the whole image by the same network (BatchNorm folded, as segflow's
workers run it; mirror-padded by the margin, as segflow pads the image borders, so that only
the seams differ; threshold 0.5), for both blends, with the trained
model and with the stress case: a random-init model with its head weights x20 (confident
outputs, but many pixels near the threshold; see infer_seam.py for its margin sweep). Printed
beside it: Dice of that whole-image mask against the unfolded model's, i.e. what folding alone
changes.

Every row is the best of `--repeat` (3) calls, so all methods are timed warm (oneDNN kernels
built for every tile shape, heap grown). The one-worker methods take turns (floor, unfolded
floor, MONAI, segflow, one call each per round), so a slow spell of the machine reaches all
of them rather than one row. segflow's first call on each image is printed too ("1st s"):
that is what one image alone costs a fresh worker.

Run (all rows; an estimated 20-30 minutes on a quiet project machine; MONAI rows need
`pip install -e '.[bench]'`):

    .venv/bin/python benchmarks/infer_throughput.py --sizes 2048 4096 \\
        --hrf ../shared/data/hrf/images/01_h.jpg --precisions fp32 bf16

The floor ratios alone (segflow x1 against both floors; about 5 minutes, estimated), or one
row (`--sizes` with no value: no synthetic image):

    .venv/bin/python benchmarks/infer_throughput.py --sizes 2048 4096 \\
        --hrf ../shared/data/hrf/images/01_h.jpg --precisions fp32 bf16 \\
        --workers 1 --no-monai --no-gaussian --train-seconds 0 --repeat 5
    .venv/bin/python benchmarks/infer_throughput.py --sizes 4096 --precisions bf16 \\
        --workers 1 --no-monai --no-gaussian --train-seconds 0 --repeat 5
    .venv/bin/python benchmarks/infer_throughput.py --sizes --precisions fp32 \\
        --hrf ../shared/data/hrf/images/01_h.jpg --workers 1 --no-monai --no-gaussian --repeat 5

Smoke test (seconds): `--sizes 512 --precisions bf16 --workers 1`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from segflow.flows.env import use_local_defaults

use_local_defaults()

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402
import zarr  # noqa: E402
from distributed import Client  # noqa: E402
from PIL import Image  # noqa: E402
from spawned import in_fresh_process  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from segflow.flows.config import InferConfig  # noqa: E402
from segflow.flows.config.infer import CHANNELS_LAST  # noqa: E402
from segflow.models.fusion import fold_batch_norm  # noqa: E402
from segflow.models.losses import build_loss  # noqa: E402
from segflow.models.unet import UNet, build_unet  # noqa: E402
from segflow.tasks.demo.large import write_large_pair  # noqa: E402
from segflow.tasks.demo.synth import SynthSpec  # noqa: E402
from segflow.tasks.infer.blocks import (  # noqa: E402
    predict_blocks,
    resolve_parallelism,
    worker_model,
)
from segflow.tasks.infer.output import prepare_predictions  # noqa: E402
from segflow.tasks.infer.sources import Source, find_sources, forget_opened  # noqa: E402
from segflow.tasks.infer.tiling import Tiling, spans  # noqa: E402
from segflow.tasks.runtime.cluster import dask_client  # noqa: E402
from segflow.tasks.runtime.device import autocast, resolve_precision  # noqa: E402
from segflow.tasks.storage.bundle import ModelBundle, load_bundle, save_bundle  # noqa: E402
from segflow.tasks.storage.grid import blocks, pieces  # noqa: E402
from segflow.tasks.train.steps import Compute, Stepper, train_one_epoch  # noqa: E402

AMP = {"fp32": None, "bf16": torch.bfloat16}
MONAI_BATCHES = (1, 8)


def make_bundle(path: Path, channels: int, model: UNet | None = None) -> Path:
    """A bundle of `model`, else of a base-16 U-Net, random init, head x20 (confident
    outputs, many pixels near the threshold: the stress case for seams)."""
    if model is None:
        torch.manual_seed(0)
        model = build_unet(in_channels=channels, num_classes=1, depth=4, base_channels=16)
        with torch.no_grad():
            model.head.weight.mul_(20.0)
    return save_bundle(
        path,
        config=model.config,
        state_dicts=[model.eval().state_dict()],
        mean=(128.0,) * channels,
        std=(64.0,) * channels,
        class_names=("background", "foreground"),
    )


class RandomCrops(Dataset):
    """`length` random `side`² (image, mask) crops of one in-memory pair ``(C, H, W)``,
    ``(H, W)``, normalised like :func:`make_bundle`'s bundles."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, side: int, length: int) -> None:
        self.image = (image.astype(np.float32) - 128.0) / 64.0
        self.mask = (mask > 0).astype(np.float32)[None]
        self.side, self.length = side, length
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        y, x = self.rng.integers(0, np.array(self.image.shape[1:]) - self.side + 1)
        window = np.s_[:, y : y + self.side, x : x + self.side]
        return torch.from_numpy(self.image[window]), torch.from_numpy(self.mask[window])


def trained_model(image: Path, mask: Path, seconds: float) -> tuple[UNet, float]:
    """(the benchmark's base-16 U-Net trained for `seconds` on 256² crops of one image and
    its mask (any format segflow reads), its training loss at the end): a network that
    segments, so seam errors are those of a real model, not of near-threshold noise. bf16
    autocast where the CPU has it."""
    pixels, labels = (whole(find_sources(str(path))[0][0]) for path in (image, mask))
    torch.manual_seed(0)
    model = build_unet(in_channels=pixels.shape[0], num_classes=1, depth=4, base_channels=16)
    model.to(memory_format=torch.channels_last)
    data = RandomCrops(pixels, labels[0], 256, length=10**6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    cpu = torch.device("cpu")
    stepper = Stepper(
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        torch.amp.GradScaler("cpu", enabled=False),
    )
    loss, _ = train_one_epoch(
        model,
        DataLoader(data, batch_size=8),
        build_loss("bce_dice", num_classes=1),
        stepper,
        Compute(cpu, resolve_precision("auto", cpu), channels_last=True),
        deadline=time.monotonic() + seconds,
    )
    return model.to(memory_format=torch.contiguous_format).eval(), loss


def whole(source: Source) -> np.ndarray:
    """All ``(C, H, W)`` pixels of an image."""
    return source.region(0, source.shape[1], 0, source.shape[2])


def hrf_tiff(jpeg: Path, out: Path) -> Path:
    """The JPEG re-written as a tiled (1024², zlib) RGB TIFF, like the synthetic inputs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(Image.open(jpeg).convert("RGB"))
    tifffile.imwrite(
        out, pixels, tile=(1024, 1024), compression="zlib", photometric="rgb", bigtiff=True
    )
    return out


def normalised(bundle: ModelBundle, source: Source) -> torch.Tensor:
    """The whole image, normalised, as a (1, C, H, W) float32 tensor."""
    return torch.from_numpy(bundle.normalize(whole(source)[None]))


def output_tiles(shape: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    """segflow's overlap-tile output tiles ``(y0, y1, x0, x1)`` of an (H, W) image, without
    the margin: `tile` pieces, the last of an axis absorbing a remainder under tile/2."""
    return [
        (y0, y1, x0, x1) for y0, y1 in pieces(shape[0], tile) for x0, x1 in pieces(shape[1], tile)
    ]


def floor_run(model, image: torch.Tensor, tiles: list, batch: int, amp, fmt) -> float:
    """Seconds of the bare forward over `tiles` ``(y0, y1, x0, x1)`` of the in-memory image,
    `batch` equally shaped tiles per forward."""
    groups: dict[tuple[int, int], list[torch.Tensor]] = defaultdict(list)
    for y0, y1, x0, x1 in tiles:
        groups[y1 - y0, x1 - x0].append(image[0, :, y0:y1, x0:x1])
    batches = [
        torch.stack(parts[i : i + batch]).contiguous(memory_format=fmt)
        for parts in groups.values()
        for i in range(0, len(parts), batch)
    ]
    start = time.perf_counter()
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        for x in batches:
            model(x)
    return time.perf_counter() - start


def monai_run(model, image: torch.Tensor, tile: int, sw_batch: int, amp, fmt) -> float:
    """Seconds of one `sliding_window_inference` call on the whole in-memory image."""
    from monai.inferers import sliding_window_inference  # only where MONAI rows run

    x = image.contiguous(memory_format=fmt)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        sliding_window_inference(
            x,
            roi_size=(tile, tile),
            sw_batch_size=sw_batch,
            predictor=lambda t: model(t.contiguous(memory_format=fmt)),
            overlap=0.25,
            mode="gaussian",
        )
    return time.perf_counter() - start


def monai_shipped(
    bundle_dir: Path,
    tiff: Path,
    tile: int,
    precision: str,
    channels_last: bool,
    threads: int,
    repeat: int,
) -> dict[int, float]:
    """Seconds of `monai_run` per sw_batch_size in a fresh process: MONAI as its users run it,
    with glibc's default malloc (segflow's workers keep freed memory mapped; see
    tasks/runtime/allocator.py). Runs in a spawned child, so nothing of this process carries
    over."""
    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_dir)
    model = bundle.ensemble.eval()
    image = normalised(bundle, find_sources(str(tiff))[0][0])
    amp = AMP[precision]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        for n in MONAI_BATCHES:  # warm the kernels
            model(image[:, :, :tile, :tile].repeat(n, 1, 1, 1).contiguous(memory_format=fmt))
    return {b: best(monai_run, repeat, model, image, tile, b, amp, fmt) for b in MONAI_BATCHES}


def monai_tiles(shape: tuple[int, int], tile: int) -> int:
    from monai.data.utils import dense_patch_slices

    size = tuple(max(s, tile) for s in shape)  # MONAI pads images smaller than the roi
    interval = tuple(tile if s == tile else int(tile * 0.75) for s in size)
    return len(dense_patch_slices(size, (tile, tile), interval))


def segflow_tiles(shape: tuple[int, int], block: int, tiling) -> int:
    """Tile forwards of predict_blocks: each block forwards every tile that writes into it."""

    def touching(length: int, lo: int, hi: int) -> int:
        return sum(1 for s in spans(length, tiling) if s.out_start < hi and s.out_stop > lo)

    return sum(
        touching(shape[0], y0, y1) * touching(shape[1], x0, x1)
        for y0, y1, x0, x1 in blocks(shape, block)
    )


def segflow_run(
    source: Source, out: Path, bundle: Path, settings: dict, workers: int, address: str | None
) -> tuple[float, float]:
    """(seconds of predict_blocks, seconds of prepare_predictions) into a fresh store `out`.

    Every run reads the TIFF cold, as a fresh `segflow infer` process does: the per-process
    cache of decoded TIFF tiles (`segflow.tasks.infer.sources`) is emptied first, on the
    cluster's workers too."""
    if out.exists():
        shutil.rmtree(out)
    forget_opened()
    if address is not None:
        with Client(address) as client:
            client.run(forget_opened)
    start = time.perf_counter()
    bundle_path, _ = prepare_predictions(
        [source],
        str(out),
        model_uri=str(bundle),
        settings={"block": settings["block"], "probability_dtype": "uint8"},
    )
    prepared = time.perf_counter() - start
    flow_config = InferConfig(
        input=source.path,
        output=str(out),
        **{k: v for k, v in settings.items() if k != "channels_last"},
    )
    config = replace(
        flow_config.block_settings(bundle_path, flow_config.parallelism()),
        channels_last=settings["channels_last"],
    )
    start = time.perf_counter()
    done, _, failed = predict_blocks(
        [source], str(out), config, workers=workers, dask_address=address, log=lambda _: None
    )
    elapsed = time.perf_counter() - start
    if failed or done != len(blocks(source.shape[1:], settings["block"])):
        raise RuntimeError(f"segflow run failed: {failed}")
    return elapsed, prepared


def whole_image_mask(model, source: Source, bundle: ModelBundle, amp, fmt, pad: int):
    """The mask of one forward over the whole image (mirror-padded by `pad`, threshold 0.5).

    With `pad` = segflow's margin, the image borders get the context segflow gives them (the
    margin mirrored, then the network's zero padding), so only the tile seams differ; and
    every overlap-tile window starts at a multiple of the tile in the padded image, so the
    pooling grids match.
    """
    width = ((0, 0), (pad, pad), (pad, pad))
    x = torch.from_numpy(bundle.normalize(np.pad(whole(source), width, mode="symmetric")[None]))
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        probs = model(x.contiguous(memory_format=fmt)).float()[0, 0]
    height, width = source.shape[1:]
    return probs[pad : pad + height, pad : pad + width].numpy() >= 0.5


def dice(a: np.ndarray, b: np.ndarray) -> float:
    both = a.sum() + b.sum()
    return 1.0 if both == 0 else float(2 * np.logical_and(a, b).sum() / both)


def seam_dice(
    model, source: Source, out: Path, bundle: ModelBundle, amp, fmt, pad: int
) -> tuple[float, float]:
    """(Dice of the stored mask against a whole-image forward of the network segflow's
    workers run, i.e. with BatchNorm folded: the tiling error alone; Dice of that whole-image
    mask against the unfolded model's: what folding alone changes at this precision)."""
    folded = fold_batch_norm(model).to(memory_format=fmt)
    truth = whole_image_mask(folded, source, bundle, amp, fmt, pad)
    mask = zarr.open_group(out, mode="r")[f"{source.name}/labels/mask/0"][0] == 1
    return dice(mask, truth), dice(truth, whole_image_mask(model, source, bundle, amp, fmt, pad))


def best(run: Callable[..., float], repeat: int, *args) -> float:
    """The least of `repeat` calls ``run(*args)``."""
    return min(run(*args) for _ in range(repeat))


RATIOS = {"floor": "/floor", "unfolded": "/unfold.", "monai": "/MONAI", "kept": "/MONAI*"}


def print_rows(
    groups: dict[tuple[str, str], list[tuple]],
    rates: dict[tuple[str, str], tuple[float, dict[str, float]]],
) -> None:
    """The table: one row per method of each (image, precision) group, with its throughput
    divided by each baseline's (folded floor, unfolded floor, MONAI, MONAI*) where measured."""
    header = (
        f"{'image':14s} {'prec':5s} {'method':29s} {'tiles':>6s} {'s':>7s} {'1st s':>7s} "
        f"{'MP/s':>7s} " + " ".join(f"{name:>8s}" for name in RATIOS.values())
    )
    print(header)
    print("-" * len(header))
    for (label, precision), group in groups.items():
        megapixels, base = rates[label, precision]
        for name, tiles, seconds, first in group:
            rate = megapixels / seconds
            cold = "" if first is None else f"{first:.2f}"
            ratios = " ".join(
                f"{rate / base[key]:8.2f}" if key in base else f"{'-':>8s}" for key in RATIOS
            )
            print(
                f"{label:14s} {precision:5s} {name:29s} {tiles:6d} {seconds:7.2f} {cold:>7s} "
                f"{rate:7.2f} {ratios}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096])
    parser.add_argument("--hrf", type=Path, help="a real image (e.g. HRF 01_h.jpg), RGB")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(AMP))
    defaults = InferConfig.model_fields  # segflow's own defaults, defined once
    parser.add_argument("--tile", type=int, default=defaults["tile"].default)
    parser.add_argument("--margin", type=int, default=defaults["margin"].default)
    parser.add_argument("--block", type=int, default=defaults["block"].default)
    cpu = resolve_parallelism("cpu", workers=1, batch=None, torch_threads=None)
    parser.add_argument("--batch", type=int, default=cpu.batch)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seam-max", type=int, default=2048)
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--gaussian", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--monai", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--unfolded-floor", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--fp32-nchw",
        action="store_true",
        help="fp32 rows in NCHW for every method, segflow included (the tables before "
        "2026-12; segflow's default is channels_last)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = cpu.torch_threads  # segflow's default for one worker: all cores
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    tmp = Path(tempfile.mkdtemp(prefix="segflow-infer-bench-"))

    start = time.perf_counter()
    inputs: list[tuple[str, Path, bool]] = []  # (label, TIFF, seam check)
    pairs: dict[int, tuple[Path, Path]] = {}
    grey_or_rgb = SynthSpec(channels=args.channels)
    for size in args.sizes:
        pairs[size] = write_large_pair(
            tmp / "src", size=size, spec=grey_or_rgb, seed=0, name=f"synth{size}"
        )
        inputs.append((f"synth {size}²", pairs[size][0], size <= args.seam_max))
    if args.hrf:
        inputs.append((f"{args.hrf.stem}", hrf_tiff(args.hrf, tmp / "src" / "hrf.tif"), False))
    warm_tiff, _ = write_large_pair(tmp / "warm", size=1024, spec=grey_or_rgb, name="warm")
    print(f"inputs written in {time.perf_counter() - start:.1f} s (tiled zlib TIFF, 1024² tiles)")

    bundles: dict[int, Path] = {}
    for c in {args.channels} | ({3} if args.hrf else set()):
        bundles[c] = make_bundle(tmp / f"bundle{c}", c)
    stress = bundles[args.channels]  # random init, head x20: the seam stress case
    seam_sizes = [size for size in args.sizes if size <= args.seam_max]
    if args.train_seconds > 0 and args.channels == 1 and seam_sizes:
        start = time.perf_counter()
        model, loss = trained_model(*pairs[min(seam_sizes)], args.train_seconds)
        bundles[1] = make_bundle(tmp / "trained1", 1, model)
        print(
            f"base-16 U-Net trained {time.perf_counter() - start:.0f} s on 256² crops of "
            f"synth {min(seam_sizes)}² (final loss {loss:.3f}); it runs the 1-channel rows"
        )
    first_model = "trained" if stress != bundles[args.channels] else "random x20"
    models = {c: load_bundle(path) for c, path in bundles.items()}
    for bundle in models.values():
        bundle.ensemble.eval()

    def layout(precision: str) -> torch.memory_format:
        """segflow's memory layout (`CHANNELS_LAST`), or NCHW for fp32 with --fp32-nchw."""
        nchw = not CHANNELS_LAST or (args.fp32_nchw and precision == "fp32")
        return torch.contiguous_format if nchw else torch.channels_last

    def settings_for(precision: str, threads: int, blend: str) -> dict:
        return {
            "tile": args.tile,
            "blend": blend,
            "margin": args.margin,
            "overlap": 0.25,
            "batch": args.batch,
            "precision": precision,
            "device": "cpu",
            "channels_last": layout(precision) == torch.channels_last,
            "block": args.block,
            "torch_threads": threads,
        }

    tiling = Tiling(tile=args.tile, blend="overlap-tile", margin=args.margin, overlap=0.25)
    gauss_tiling = Tiling(tile=args.tile, blend="gaussian", margin=args.margin, overlap=0.25)
    seams: list[tuple] = []
    prepares: list[float] = []
    warm_source = find_sources(str(warm_tiff))[0][0]
    blends = ["overlap-tile", "gaussian"] if args.gaussian else ["overlap-tile"]

    def out_path(source: Source, precision: str, workers: int, blend: str) -> Path:
        return tmp / "out" / f"{source.name}-{precision}-{workers}-{blend}.zarr"

    def segflow_once(
        source: Source, precision: str, workers: int, blend: str, address, bundle: Path
    ) -> float:
        """Seconds of one segflow run into `out_path` (kept for the seam check)."""
        config = settings_for(precision, max(1, cores // workers), blend)
        out = out_path(source, precision, workers, blend)
        elapsed, prepared = segflow_run(source, out, bundle, config, workers, address)
        prepares.append(prepared)
        return elapsed

    def segflow_row(source: Source, workers: int, blend: str, times: list[float]) -> tuple:
        """(row name, tile forwards, best seconds, first seconds)."""
        name = f"segflow x{workers} ({max(1, cores // workers)} thr)"
        if blend == "gaussian":
            name = f"segflow gaussian x{workers}"
        geometry = tiling if blend == "overlap-tile" else gauss_tiling
        return name, segflow_tiles(source.shape[1:], args.block, geometry), min(times), times[0]

    def warm_up(workers: int, address: str | None) -> None:
        """Imports, oneDNN kernels and model load paths, on a small image."""
        for precision in args.precisions:
            config = settings_for(precision, max(1, cores // workers), "overlap-tile")
            out = tmp / "out" / "warm.zarr"
            segflow_run(warm_source, out, bundles[args.channels], config, workers, address)

    # One process, one worker: no Dask cluster is alive while these rows run (an idle
    # LocalCluster's scheduler and heartbeats measured 6 % off an in-process run). The
    # methods take turns, one call each per round, so a slow spell of the machine hits
    # all of them rather than one row.
    groups: dict[tuple[str, str], list[tuple]] = {}
    rates: dict[tuple[str, str], tuple[float, dict[str, float]]] = {}
    sources: dict[str, Source] = {}
    warm_up(1, None)
    for label, tiff, check_seam in inputs:
        source = sources[label] = find_sources(str(tiff))[0][0]
        bundle = models[source.shape[0]]
        model = bundle.ensemble
        shape = source.shape[1:]
        megapixels = shape[0] * shape[1] / 1e6
        image = normalised(bundle, source)
        for precision in args.precisions:
            amp = resolve_precision(precision, device)  # as segflow's workers resolve it
            fmt = layout(precision)
            torch.set_num_threads(threads)
            # Weights in the same format as the input: with 1-channel input,
            # x.contiguous(memory_format=channels_last) is a no-op and only the weights'
            # format switches the network to NHWC.
            model.to(memory_format=fmt)
            # The network segflow's workers run: BatchNorm folded, weights in `fmt`; loaded by
            # segflow's own code (and cached there, under a key of its own).
            bundle_dir = bundles[source.shape[0]]
            served = worker_model(str(bundle_dir), "floor", device, fmt == torch.channels_last)
            folded = served.ensemble
            with torch.inference_mode(), autocast(device, amp):
                warm = {1, args.batch} | (set(MONAI_BATCHES) if args.monai else set())
                for n in warm:  # build the kernels
                    x = image[:, :, : args.tile, : args.tile].repeat(n, 1, 1, 1)
                    model(x.contiguous(memory_format=fmt))
                    if n in (1, args.batch):
                        folded(x.contiguous(memory_format=fmt))
            tiles = output_tiles(shape, args.tile)
            methods: dict[str, Callable[[], float]] = {
                "floor": partial(floor_run, folded, image, tiles, args.batch, amp, fmt),
            }
            if args.unfolded_floor:
                methods["unfolded"] = partial(floor_run, model, image, tiles, args.batch, amp, fmt)
            if args.monai:
                for b in MONAI_BATCHES:
                    methods[f"monai {b}"] = partial(monai_run, model, image, args.tile, b, amp, fmt)
            for blend in blends:
                methods[blend] = partial(
                    segflow_once, source, precision, 1, blend, None, bundle_dir
                )
            times: dict[str, list[float]] = defaultdict(list)
            for _ in range(args.repeat):
                for name, run in methods.items():
                    torch.set_num_threads(threads)
                    times[name].append(run())
            floor_s = min(times["floor"])
            group = groups[label, precision] = [
                ("floor: workers' net (folded)", len(tiles), floor_s, None)
            ]
            base = {"floor": megapixels / floor_s}
            if args.unfolded_floor:
                unfolded_s = min(times["unfolded"])
                group.append(("floor, unfolded (as given)", len(tiles), unfolded_s, None))
                base["unfolded"] = megapixels / unfolded_s
            if args.monai:
                monai_s = {b: min(times[f"monai {b}"]) for b in MONAI_BATCHES}
                monai_b = min(monai_s, key=monai_s.get)
                shipped_s = in_fresh_process(  # glibc defaults, as MONAI's users run it
                    monai_shipped,
                    bundle_dir,
                    tiff,
                    args.tile,
                    precision,
                    fmt == torch.channels_last,
                    threads,
                    args.repeat,
                )
                shipped_b = min(shipped_s, key=shipped_s.get)
                base["monai"] = megapixels / shipped_s[shipped_b]
                base["kept"] = megapixels / monai_s[monai_b]
                windows = monai_tiles(shape, args.tile)
                group += [
                    (f"MONAI sw_batch {shipped_b}", windows, shipped_s[shipped_b], None),
                    (f"MONAI kept-memory sw {monai_b}", windows, monai_s[monai_b], None),
                ]
            rates[label, precision] = (megapixels, base)
            for blend in blends:
                group.append(segflow_row(source, 1, blend, times[blend]))
                out = out_path(source, precision, 1, blend)
                if check_seam:
                    torch.set_num_threads(threads)
                    seam, folding = seam_dice(model, source, out, bundle, amp, fmt, args.margin)
                    seams.append((label, precision, first_model, blend, seam, folding))
                    if stress != bundle_dir:
                        segflow_once(source, precision, 1, blend, None, stress)
                        noise = load_bundle(stress)
                        net = noise.ensemble.eval().to(memory_format=fmt)
                        seam, folding = seam_dice(net, source, out, noise, amp, fmt, args.margin)
                        seams.append((label, precision, "random x20", blend, seam, folding))
                shutil.rmtree(out)
    # Then W workers on a LocalCluster, started once per W before timing and warmed up.
    cluster_start: dict[int, float] = {}
    for workers in sorted({w for w in args.workers if w > 1}):
        start = time.perf_counter()
        with dask_client(workers=workers) as client:
            client.run(importlib.import_module, "segflow.tasks.infer.blocks")
            cluster_start[workers] = time.perf_counter() - start
            address = client.scheduler.address
            warm_up(workers, address)
            for (label, precision), group in groups.items():
                source = sources[label]
                times = [
                    segflow_once(
                        source, precision, workers, "overlap-tile", address,
                        bundles[source.shape[0]],
                    )
                    for _ in range(args.repeat)
                ]  # fmt: skip
                row = segflow_row(source, workers, "overlap-tile", times)
                group.insert(len(group) - (1 if args.gaussian else 0), row)  # before gaussian
                shutil.rmtree(out_path(source, precision, workers, "overlap-tile"))
    print(
        f"torch {torch.__version__}, {cores} cores, tile {args.tile}, margin {args.margin}, "
        f"block {args.block}, batch {args.batch}, repeat {args.repeat} (best of); floor, "
        f"MONAI and segflow x1: {threads} torch threads, layout "
        + ", ".join(f"{p} {layout(p)}" for p in args.precisions)
        + "; /floor: against the folded floor (the network segflow's workers run)"
    )
    for workers, seconds in cluster_start.items():
        print(f"Dask LocalCluster start, {workers} workers (not timed): {seconds:.1f} s")
    if prepares:
        print(f"prepare_predictions (not timed): {min(prepares):.2f}-{max(prepares):.2f} s")
    print_rows(groups, rates)
    if seams:
        print(
            "\nseam error: Dice of segflow's mask vs a whole-image forward of the same "
            "(BatchNorm-folded) network (target >= 0.995); folding: Dice of that whole-image "
            "mask vs the unfolded model's"
        )
        for label, precision, model_name, blend, seam, folding in seams:
            print(
                f"{label:14s} {precision:5s} {model_name:10s} {blend:13s} Dice {seam:.4f}  "
                f"folding {folding:.4f}"
            )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
