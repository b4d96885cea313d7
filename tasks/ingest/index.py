"""The store's index: the split and summary of the committed samples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from segflow.tasks.ingest.pairs import Rejection
from segflow.tasks.ingest.samples import store_format
from segflow.tasks.ingest.source_split import SourceSplit
from segflow.tasks.ingest.split import complete_split
from segflow.tasks.storage.dataset_writer import (
    committed_samples,
    write_index,
)
from segflow.tasks.storage.image_io import ImageFormat
from segflow.tasks.storage.paths import read_index


def _stratum(counts: tuple[int, ...], rarity: list[int]) -> int:
    """Rank of the rarest foreground class present: 0 when none, larger when rarer."""
    for position, cls in enumerate(rarity):
        if cls > 0 and counts[cls] > 0:
            return len(rarity) - position
    return 0


def build_index(
    store: str | Path,
    *,
    rejected: list[Rejection],
    fractions: Mapping[str, float],
    seed: int,
    source_split: SourceSplit | None = None,
    image_format: ImageFormat | None = None,
) -> dict:
    """Compute the split and summary of the committed samples and write them to the store.

    The samples `source_split` assigns get the source's split, the others are split by
    `fractions` (:func:`~segflow.tasks.ingest.split.complete_split`); where the split came
    from is recorded as ``split_source``. Earlier assignments of the samples the source leaves
    open are kept when the seed and fractions are unchanged. The store's image format is
    recorded once it holds a sample: `image_format`, the one every sample of the ingest was
    checked to have (``SampleChecks.image_format``), else read from the samples
    (:func:`~segflow.tasks.ingest.samples.store_format`: on object storage, a GET per sample).
    """
    source_split = source_split or SourceSplit()
    samples = committed_samples(store)
    meta = read_index(store)
    num_classes = len(meta["class_names"])
    totals = np.zeros(num_classes, dtype=np.int64)
    for sample in samples.values():
        totals += np.asarray(sample.class_counts, dtype=np.int64)
    rarity = [int(c) for c in np.argsort(totals, kind="stable")]
    strata = {s.sample_id: _stratum(s.class_counts, rarity) for s in samples.values()}
    same = meta.get("split_seed") == seed and meta.get("split_fractions") == dict(fractions)
    split = complete_split(
        strata,
        given=source_split.assigned,
        fractions=fractions,
        seed=seed,
        previous=meta.get("split") if same else None,
    )
    index = {
        "num_samples": len(samples),
        "class_counts": [int(t) for t in totals],
        "split": split,
        "split_seed": seed,
        "split_fractions": dict(fractions),
        "split_source": source_split.origin,
        "rejected": [asdict(r) for r in rejected],
    }
    if samples:
        if recorded := meta.get("image_format"):
            index["image_format"] = dict(recorded)
        elif found := image_format or store_format(store, samples.keys()):
            index["image_format"] = asdict(found)
    write_index(store, index)
    return index
