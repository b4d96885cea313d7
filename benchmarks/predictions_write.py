"""Encoding and writing one block of the prediction store, by inner chunk side and codec.

Writes a 2048² block (one shard) of uint8 probabilities and of the uint8 mask into arrays laid
out as `segflow.tasks.storage.predictions` lays them out (shards of 2048², Blosc), for inner chunks
of 256, 512
and 1024 and three Blosc settings; best of 5 writes, each opening the group as `write_block`
does. The probabilities are a smoothed random field through a steep sigmoid (large confident
regions, thin uncertain borders, as a trained model's). Run (seconds):

    .venv/bin/python benchmarks/predictions_write.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from skimage.filters import gaussian
from zarr.codecs import BloscCodec

from segflow.tasks.storage.predictions import class_ids, to_stored

BLOCK = 2048
CODECS = {
    "zstd 3 bitshuffle (segflow)": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "lz4 5 bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
    "zstd 1 no shuffle": BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"),
}


def probabilities(seed: int = 0) -> np.ndarray:
    field = gaussian(np.random.default_rng(seed).random((BLOCK, BLOCK)), sigma=4)
    return (1 / (1 + np.exp(-(field - 0.5) * 200))).astype(np.float32)[None]


def write_seconds(chunk: int, codec: BloscCodec, probs: np.ndarray, repeat: int = 5):
    """(best seconds to write the block's two arrays, bytes on disk)."""
    folder = Path(tempfile.mkdtemp(prefix="segflow-write-"))
    group = zarr.open_group(folder, mode="w")
    for name in ("p", "m"):
        group.create_array(
            name,
            shape=(1, 2 * BLOCK, 2 * BLOCK),
            dtype="uint8",
            chunks=(1, chunk, chunk),
            shards=(1, BLOCK, BLOCK),
            compressors=codec,
            config={"write_empty_chunks": True},
        )
    stored, mask = to_stored(probs, "uint8"), class_ids(probs, 0.5)[None]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        opened = zarr.open_group(folder, mode="r+")
        opened["p"][:, :BLOCK, :BLOCK] = stored
        opened["m"][:, :BLOCK, :BLOCK] = mask
        best = min(best, time.perf_counter() - start)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return best, size


def main() -> None:
    probs = probabilities()
    print(f"{os.cpu_count()} cores, zarr {zarr.__version__}, one {BLOCK}² block, 2 arrays")
    print(f"{'chunk':>6s} {'codec':30s} {'ms':>6s} {'MB':>6s}")
    for chunk in (256, 512, 1024):
        for name, codec in CODECS.items():
            seconds, size = write_seconds(chunk, codec, probs)
            print(f"{chunk:6d} {name:30s} {seconds * 1e3:6.0f} {size / 1e6:6.2f}")


if __name__ == "__main__":
    main()
