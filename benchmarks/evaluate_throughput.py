"""Evaluation: throughput against a streaming NumPy loop, and peak memory on a huge mask pair.

Builds, block by block (never a whole image in memory), a dataset store with one grey image of
SIZE² pixels and its binary mask (random blobs, ~10 % foreground) and a prediction store of
uint8 probabilities that mostly agree with the mask, as `segflow infer` writes them.

- ``--mode speed`` (default 8192²): segflow's streaming evaluation
  (`segflow.tasks.evaluate.blocks.score_blocks`, the plain function the flow calls) against
  the baseline a careful user would write: a NumPy loop over the same 2048² blocks, reading
  truth, stored mask and stored probabilities block by block from the same Zarr stores,
  confusion counts by ``np.bincount(truth * K + pred, minlength=K * K)`` accumulated as int64
  and BCE summed per block in float64 from the stored probabilities (``q / 255``, clipped to
  ``[EPS, 1 - EPS]`` with segflow's `segflow.tasks.evaluate.scoring.EPS`, one log per pixel).
  Both compute Dice, IoU, precision, recall and BCE; the script stops unless they agree to
  1e-9 relative. Timed in turns (segflow, NumPy, segflow, ... `--repeat` rounds, best and
  median), after one untimed call each:

  * 1 process: both in this process, torch limited to `--torch-threads` (1: NumPy's loop is
    single-threaded; zarr's own decoding threads serve both alike), no Dask cluster alive;
  * 2 processes: both on one Dask LocalCluster of 2 single-threaded workers
    (`segflow.tasks.runtime.cluster.dask_client`, what segflow starts), started once before
    timing (its start is printed, not timed): segflow via ``dask_address``, the NumPy loop as
    one ``client.submit`` per block, summed as the blocks complete.

  `--sklearn` adds scikit-learn's ``f1_score``, ``jaccard_score``, ``precision_score``,
  ``recall_score`` and ``log_loss`` on the same pixels already in memory (loading them is not
  timed; the "14x scikit-learn" comparison of 2026-11-25), in the 1-process turns.
- ``--mode memory`` (default 32768²): the whole `evaluate-predictions` flow (Prefect, Dask
  LocalCluster of 2 workers, MLflow logging with overlays) in a subprocess, sampling the RSS of
  its process tree every 50 ms (Prefect's temporary server is in that tree too).

    .venv/bin/python benchmarks/evaluate_throughput.py --mode speed --size 8192 --repeat 5
    .venv/bin/python benchmarks/evaluate_throughput.py --mode memory --size 32768
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask.array as da
import numpy as np
import torch
import zarr
from distributed import Client, as_completed
from ingest_large_rss import watch_peak_rss
from scipy import ndimage
from sklearn.metrics import f1_score, jaccard_score, log_loss, precision_score, recall_score

from segflow.tasks.evaluate.blocks import Evaluation, score_blocks
from segflow.tasks.evaluate.plan import plan_evaluation
from segflow.tasks.evaluate.scoring import EPS
from segflow.tasks.ingest.index import build_index
from segflow.tasks.runtime.cluster import dask_client
from segflow.tasks.storage.dataset_writer import init_store, write_sample
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import create_image_arrays, write_block

BLOCK = 2048
NAME = "big"  # the one sample of both stores
K = 2  # classes: background, foreground
METRICS = ("dice", "iou", "precision", "recall", "bce")


def _blob_mask(block: np.ndarray, block_info=None) -> np.ndarray:
    """~10 % foreground blobs, seeded by the block's position (deterministic)."""
    y, x = block_info[None]["chunk-location"]
    rng = np.random.default_rng([y, x])
    noise = ndimage.zoom(
        rng.standard_normal((block.shape[0] // 32 + 1, block.shape[1] // 32 + 1)), 32, order=1
    )
    return (noise[: block.shape[0], : block.shape[1]] > 1.28).astype(np.uint8)


def build(tmp: Path, size: int) -> tuple[Path, Path]:
    """The dataset store (one sample, in the test split) and its prediction store."""
    store = tmp / "ds.zarr"
    init_store(store, class_names=("background", "foreground"))
    shape = (size, size)
    mask = da.zeros(shape, dtype=np.uint8, chunks=BLOCK).map_blocks(_blob_mask, dtype=np.uint8)
    image = da.zeros((1, *shape), dtype=np.uint8, chunks=(1, BLOCK, BLOCK))
    counts = [0, 0]
    for region in blocks(shape, BLOCK):
        m = mask[region[0] : region[1], region[2] : region[3]].compute()
        counts[1] += int(m.sum())
    counts[0] = size * size - counts[1]
    write_sample(
        store,
        NAME,
        image,
        mask,
        image_attrs={"sha256": "synthetic"},
        mask_attrs={
            "sha256": "synthetic-mask",
            "image_sha256": "synthetic",
            "class_counts": counts,
        },
        workers=2,
    )
    build_index(store, rejected=[], fractions={"train": 0.0, "val": 0.0, "test": 1.0}, seed=0)
    out = tmp / "pred.zarr"
    zarr.open_group(out, mode="a").attrs["segflow"] = {
        "kind": "predictions",
        "class_names": ["background", "foreground"],
        "binary_class": 1,
        "settings": {"probability_dtype": "uint8", "block": BLOCK, "threshold": 0.5},
        "model_uri": "synthetic",
        "model": None,
    }
    create_image_arrays(
        out,
        NAME,
        shape=shape,
        class_names=("background", "foreground"),
        classes=1,
        block=BLOCK,
        probability_dtype="uint8",
        attrs={"lineage": {"kind": "store", "sha256": "synthetic"}},  # the image's sha256
    )
    truth = zarr.open_array(store / "masks" / NAME, mode="r")
    for y0, y1, x0, x1 in blocks(shape, BLOCK):
        t = np.asarray(truth[y0:y1, x0:x1])
        rng = np.random.default_rng([y0, x0])
        logits = 4.0 * (2.0 * t - 1.0) + 1.5 * rng.standard_normal(t.shape)
        probs = (1.0 / (1.0 + np.exp(-logits)))[None]
        write_block(out, NAME, (y0, y1, x0, x1), probs, threshold=0.5, probability_dtype="uint8")
    return store, out


# --- the baseline: what a careful user writes with NumPy and zarr alone ---------------------


def numpy_arrays(predictions: Path, store: Path) -> tuple[zarr.Array, zarr.Array, zarr.Array]:
    """(stored probabilities ``(1, H, W)`` uint8, stored mask ``(1, H, W)``, truth ``(H, W)``)."""
    image = zarr.open_group(predictions / NAME, mode="r")
    truth = zarr.open_array(store / "masks" / NAME, mode="r")
    return image["0"], image["labels/mask/0"], truth


def numpy_block(arrays: tuple, region: tuple[int, int, int, int]) -> tuple[np.ndarray, float]:
    """(int64 ``(K * K,)`` confusion counts, indexed ``truth * K + pred``; summed BCE) of one
    block ``(y0, y1, x0, x1)``."""
    probs, mask, truth = arrays
    y0, y1, x0, x1 = region
    t = np.asarray(truth[y0:y1, x0:x1]) == 1
    pred = np.asarray(mask[0, y0:y1, x0:x1])
    counts = np.bincount((t.astype(np.intp) * K + pred).ravel(), minlength=K * K)
    p = np.clip(np.asarray(probs[0, y0:y1, x0:x1]) / 255.0, EPS, 1 - EPS)
    bce = -np.log(np.where(t, p, 1.0 - p)).sum(dtype=np.float64)
    return counts.astype(np.int64), float(bce)


def numpy_task(predictions: Path, store: Path, region: tuple) -> tuple[np.ndarray, float]:
    """:func:`numpy_block` in a Dask worker, which opens the arrays itself."""
    return numpy_block(numpy_arrays(predictions, store), region)


def numpy_scores(counts: np.ndarray, bce_sum: float) -> dict[str, float]:
    """Foreground Dice, IoU, precision, recall (1.0 where the denominator is 0, as segflow)
    and mean BCE from the summed counts."""
    (tn, fp), (fn, tp) = counts.reshape(K, K)

    def ratio(a: int, b: int) -> float:
        return 1.0 if b == 0 else a / b

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "bce": bce_sum / counts.sum(),
    }


def numpy_loop(predictions: Path, store: Path, regions: list) -> dict[str, float]:
    """The baseline in this process: one block after another."""
    arrays = numpy_arrays(predictions, store)
    counts, bce = np.zeros(K * K, np.int64), 0.0
    for region in regions:
        c, b = numpy_block(arrays, region)
        counts += c
        bce += b
    return numpy_scores(counts, bce)


def numpy_dask(predictions: Path, store: Path, regions: list, address: str) -> dict[str, float]:
    """The baseline on the cluster at `address`: one task per block, summed as they finish."""
    counts, bce = np.zeros(K * K, np.int64), 0.0
    with Client(address) as client:
        futures = [client.submit(numpy_task, predictions, store, r, pure=False) for r in regions]
        for future in as_completed(futures):
            c, b = future.result()
            counts += c
            bce += b
    return numpy_scores(counts, bce)


def sklearn_scores(truth: np.ndarray, pred: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """scikit-learn's five calls on the flattened in-memory pixels (float64 inside)."""
    return {
        "dice": f1_score(truth, pred),
        "iou": jaccard_score(truth, pred),
        "precision": precision_score(truth, pred),
        "recall": recall_score(truth, pred),
        "bce": log_loss(truth, probs, labels=[0, 1]),
    }


# --- timing ---------------------------------------------------------------------------------


def pooled(evaluation: Evaluation) -> dict[str, float]:
    return {name: getattr(evaluation.pooled, name) for name in METRICS}


def check_agreement(name: str, got: dict[str, float], want: dict[str, float]) -> None:
    """Stop unless every metric of `got` equals segflow's `want` to 1e-9 relative."""
    for metric in METRICS:
        a, b = got[metric], want[metric]
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0):
            raise SystemExit(f"{name}: {metric} {a!r} disagrees with segflow's {b!r}")


def in_turns(methods: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of `repeat` calls of each method, one call each per round."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def speed(
    store: Path, out: Path, size: int, repeat: int, torch_threads: int, sklearn: bool
) -> None:
    plan = plan_evaluation(str(out), str(store), "test")
    regions = plan.regions[NAME]
    mp = size * size / 1e6
    torch.set_num_threads(torch_threads)
    rows: dict[tuple[str, int], list[float]] = {}

    # 1 process, no cluster alive. One untimed call each: imports, zarr metadata, and the
    # numbers to check.
    want = pooled(score_blocks(plan, workers=1, dask_address=None, log=lambda _: None))
    check_agreement("NumPy loop", numpy_loop(out, store, regions), want)
    methods: dict[str, Callable[[], object]] = {
        "segflow": lambda: score_blocks(plan, workers=1, dask_address=None, log=lambda _: None),
        "NumPy loop": lambda: numpy_loop(out, store, regions),
    }
    if sklearn:
        mask = zarr.open_array(store / "masks" / NAME, mode="r")
        truth = (np.asarray(mask).ravel() == 1).astype(np.uint8)  # labels 0/1, like pred
        image = zarr.open_group(out / NAME, mode="r")
        pred = np.asarray(image["labels/mask/0"][0]).ravel()
        probs = np.clip(np.asarray(image["0"][0]).ravel() / 255.0, EPS, 1 - EPS)
        check_agreement("scikit-learn", sklearn_scores(truth, pred, probs), want)
        methods["scikit-learn (in memory)"] = lambda: sklearn_scores(truth, pred, probs)
    for name, seconds in in_turns(methods, repeat).items():
        rows[name, 1] = seconds
    if sklearn:
        del truth, pred, probs  # ~0.6 GB at 8192²

    # 2 processes: one LocalCluster for both, started once.
    start = time.perf_counter()
    with dask_client(workers=2) as client:
        address = client.scheduler.address
        started = time.perf_counter() - start
        got = score_blocks(plan, workers=2, dask_address=address, log=lambda _: None)
        if pooled(got) != want:
            raise SystemExit(f"segflow on 2 workers: {pooled(got)} != {want}")
        check_agreement("NumPy on 2 workers", numpy_dask(out, store, regions, address), want)
        methods = {
            "segflow": lambda: score_blocks(
                plan, workers=2, dask_address=address, log=lambda _: None
            ),
            "NumPy loop": lambda: numpy_dask(out, store, regions, address),
        }
        for name, seconds in in_turns(methods, repeat).items():
            rows[name, 2] = seconds

    print(
        f"{size}² = {mp:.0f} MP, {len(regions)} blocks of {BLOCK}², {os.cpu_count()} cores, "
        f"torch threads {torch_threads} (1 process), repeat {repeat} in turns; "
        f"LocalCluster start (not timed) {started:.1f} s"
    )
    header = f"{'method':26s} {'procs':>5s} {'best s':>7s} {'median s':>8s} {'MP/s':>7s}"
    print(header)
    print("-" * len(header))
    for (name, procs), seconds in rows.items():
        best = min(seconds)
        print(
            f"{name:26s} {procs:5d} {best:7.2f} {statistics.median(seconds):8.2f} {mp / best:7.1f}"
        )
    for procs in (1, 2):
        a, b = rows["segflow", procs], rows["NumPy loop", procs]
        print(
            f"segflow MP/s / NumPy loop MP/s, {procs} process(es): {min(b) / min(a):.2f}x (best), "
            f"{statistics.median(b) / statistics.median(a):.2f}x (median)"
        )
    print("agreement (segflow | NumPy loop, relative difference):")
    numpy_numbers = numpy_loop(out, store, regions)
    for metric in METRICS:
        a, b = want[metric], numpy_numbers[metric]
        print(f"  {metric:<9} {a:.12f} | {b:.12f}  {abs(a - b) / abs(a):.1e}")


def memory(store: Path, out: Path, tmp: Path) -> None:
    code = (
        "from segflow.flows.env import use_local_defaults; use_local_defaults(); "
        "from segflow.flows.config import EvaluateConfig; "
        "from segflow.flows.evaluate import evaluate_predictions; "
        f"s = evaluate_predictions(EvaluateConfig(predictions={str(out)!r}, store={str(store)!r}, "
        f"workdir={str(tmp / 'work')!r}, workers=2)); "
        "import json; print(json.dumps(s.report['pooled']))"
    )
    env = os.environ | {"SEGFLOW_HOME": str(tmp / "home")}
    start = time.perf_counter()
    output = tmp / "evaluate.out"  # a file, not a pipe: a full pipe would stall the flow
    with output.open("w") as out_file:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out_file, env=env)
        peak_own, peak_tree = watch_peak_rss(proc)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"evaluation failed ({proc.returncode})")
    pooled = json.loads(output.read_text().strip().splitlines()[-1])
    print(f"evaluate-predictions flow: {seconds:.0f} s; Dice {pooled['dice']:.4f}")
    print(
        f"peak RSS: flow process {peak_own / 2**20:.0f} MiB, "
        f"process tree {peak_tree / 2**20:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("speed", "memory"), default="speed")
    parser.add_argument("--size", type=int)
    parser.add_argument("--repeat", type=int, default=5, help="speed: rounds in turns")
    parser.add_argument("--torch-threads", type=int, default=1, help="speed, 1 process")
    parser.add_argument("--sklearn", action="store_true", help="speed: add scikit-learn")
    args = parser.parse_args()
    size = args.size or (8192 if args.mode == "speed" else 32768)
    with tempfile.TemporaryDirectory(prefix="segflow-eval-") as tmp:
        start = time.perf_counter()
        store, out = build(Path(tmp), size)
        print(f"built {size}² stores in {time.perf_counter() - start:.0f} s")
        if args.mode == "speed":
            speed(store, out, size, args.repeat, args.torch_threads, args.sklearn)
        else:
            memory(store, out, Path(tmp))


if __name__ == "__main__":
    main()
