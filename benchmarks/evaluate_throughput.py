"""Evaluation: throughput against scikit-learn, and peak memory on a huge mask pair.

Builds, block by block (never a whole image in memory), a dataset store with one grey image of
SIZE² pixels and its binary mask (random blobs, ~10 % foreground) and a prediction store of
uint8 probabilities that mostly agree with the mask, as `segflow infer` writes them.

- ``--mode speed`` (default 8192²): segflow's streaming evaluation
  (`segflow.tasks.evaluate.blocks.score_blocks`,
  reading both stores chunk by chunk, 1 and 2 workers) against scikit-learn's ``f1_score``,
  ``jaccard_score``, ``precision_score``, ``recall_score`` and ``log_loss`` on the same pixels
  already in memory (loading them is not timed); checks that the numbers agree.
- ``--mode memory`` (default 32768²): the whole `evaluate-predictions` flow (Prefect, Dask
  LocalCluster of 2 workers, MLflow logging with overlays) in a subprocess, sampling the RSS of
  its process tree every 50 ms (Prefect's temporary server is in that tree too).

    .venv/bin/python benchmarks/evaluate_throughput.py --mode speed --size 8192
    .venv/bin/python benchmarks/evaluate_throughput.py --mode memory --size 32768
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from ingest_large_rss import watch_peak_rss
from scipy import ndimage
from sklearn.metrics import f1_score, jaccard_score, log_loss, precision_score, recall_score

from segflow.tasks.evaluate.blocks import score_blocks
from segflow.tasks.evaluate.plan import plan_evaluation
from segflow.tasks.ingest.index import build_index
from segflow.tasks.storage.dataset_writer import init_store, write_sample
from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import create_image_arrays, write_block

BLOCK = 2048


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
        "big",
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
        out, "big", shape=shape, classes=1, block=BLOCK, probability_dtype="uint8", attrs={}
    )
    truth = zarr.open_array(store / "masks" / "big", mode="r")
    for y0, y1, x0, x1 in blocks(shape, BLOCK):
        t = np.asarray(truth[y0:y1, x0:x1])
        rng = np.random.default_rng([y0, x0])
        logits = 4.0 * (2.0 * t - 1.0) + 1.5 * rng.standard_normal(t.shape)
        probs = (1.0 / (1.0 + np.exp(-logits)))[None]
        write_block(out, "big", (y0, y1, x0, x1), probs, threshold=0.5, probability_dtype="uint8")
    return store, out


def speed(store: Path, out: Path, size: int) -> None:
    plan = plan_evaluation(str(out), str(store), "test")
    mp = size * size / 1e6
    results = {}
    for workers in (1, 2):
        start = time.perf_counter()
        result = score_blocks(plan, workers=workers, dask_address=None, log=lambda _: None)
        seconds = time.perf_counter() - start
        results[workers] = result
        print(f"segflow evaluate, {workers} worker(s): {seconds:6.2f} s  {mp / seconds:7.1f} MP/s")
    truth = np.asarray(zarr.open_array(store / "masks" / "big", mode="r")).ravel()
    image = zarr.open_group(out / "big", mode="r")
    pred = np.asarray(image["labels/mask/0"][0]).ravel()
    probs = np.clip(np.asarray(image["0"][0]).ravel() / 255.0, 1e-7, 1 - 1e-7)
    start = time.perf_counter()
    expected = {
        "dice": f1_score(truth, pred),
        "iou": jaccard_score(truth, pred),
        "precision": precision_score(truth, pred),
        "recall": recall_score(truth, pred),
        "bce": log_loss(truth, probs, labels=[0, 1]),
    }
    seconds = time.perf_counter() - start
    print(f"scikit-learn, in memory:     {seconds:6.2f} s  {mp / seconds:7.1f} MP/s")
    pooled = results[1].pooled
    for name, value in expected.items():
        got = getattr(pooled, name)
        print(f"  {name:<9} segflow {got:.9f}  sklearn {value:.9f}  diff {abs(got - value):.1e}")
    assert results[2].pooled == pooled


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
    args = parser.parse_args()
    size = args.size or (8192 if args.mode == "speed" else 32768)
    with tempfile.TemporaryDirectory(prefix="segflow-eval-") as tmp:
        start = time.perf_counter()
        store, out = build(Path(tmp), size)
        print(f"built {size}² stores in {time.perf_counter() - start:.0f} s")
        if args.mode == "speed":
            speed(store, out, size)
        else:
            memory(store, out, Path(tmp))


if __name__ == "__main__":
    main()
