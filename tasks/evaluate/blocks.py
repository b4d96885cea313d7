"""Tally every block of an evaluation plan, in this process or on Dask, and score the sums."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segflow.tasks.evaluate.plan import Plan
from segflow.tasks.evaluate.scoring import (
    Layout,
    Scores,
    Tally,
    scores,
    tally_block,
    threshold_sweep,
)
from segflow.tasks.runtime.cluster import map_unordered
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.urls import open_group

logger = logging.getLogger(__name__)

# Below this many pixels one in-process worker beats a LocalCluster, whose start-up (~5 s)
# outweighs the work: 8192² took 2.5 s in-process, 6.9 s on 2 workers (benchmarks/README.md).
IN_PROCESS_PIXELS = 2**28


def default_evaluation_workers(plan: Plan, cores: int) -> int:
    """One in-process worker for small evaluations, else one per core."""
    pixels = sum((r[1] - r[0]) * (r[3] - r[2]) for _, r in plan.jobs)
    return 1 if pixels <= IN_PROCESS_PIXELS else cores


@dataclass(frozen=True)
class Evaluation:
    """Scores per image and pooled over all images, and the pooled threshold sweep (Dice per
    foreground class at each of :data:`segflow.tasks.evaluate.scoring.THRESHOLDS`)."""

    plan: Plan
    images: dict[str, Scores]
    pooled: Scores
    sweep: dict[str, list[float]]


def read_block_tally(
    predictions: str, store: str, name: str, region: tuple[int, int, int, int], layout: Layout
) -> Tally:
    """Tally one block ``(y0, y1, x0, x1)`` of image `name`, reading only that block of the
    prediction store and of the dataset store's mask."""
    y0, y1, x0, x1 = region
    image = open_group(predictions, name, mode="r")
    probs = np.asarray(image["0"][:, y0:y1, x0:x1])
    mask = np.asarray(image["labels/mask/0"][0, y0:y1, x0:x1])
    truth = np.asarray(open_dataset(store).mask(name)[y0:y1, x0:x1])
    return tally_block(probs, mask, truth, layout)


def score_blocks(
    plan: Plan,
    *,
    workers: int,
    dask_address: str | None,
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """Tally every block of `plan` and score each image, all images pooled, and the sweep.

    One worker and no `dask_address` runs in this process, else on Dask (see
    :func:`segflow.tasks.runtime.cluster.map_unordered`). Blocks finish in any order; an image
    is scored as soon as its last block is in, so only the tallies of unfinished images are
    held. Progress goes to `log` (default: this module's logger) every 5 % of the blocks.

    Raises
    ------
    ValueError
        `plan` holds no blocks.
    """
    log = log or logger.info
    jobs = plan.jobs
    if not jobs:
        raise ValueError(f"{plan.predictions}: the plan holds no blocks (images {plan.names})")
    remaining = {name: len(plan.regions[name]) for name in plan.names}
    partial: dict[str, Tally] = {}
    images: dict[str, Scores] = {}
    total: Tally | None = None
    every = max(1, len(jobs) // 20)
    arguments = [(plan.predictions, plan.store, n, r, plan.layout) for n, r in jobs]
    results = map_unordered(
        read_block_tally, arguments, workers=workers, dask_address=dask_address, log=log
    )
    for done, (args, tally) in enumerate(results, start=1):
        name = args[2]
        partial[name] = partial[name] + tally if name in partial else tally
        remaining[name] -= 1
        if remaining[name] == 0:
            finished = partial.pop(name)
            images[name] = scores(finished, plan.layout)
            total = finished if total is None else total + finished
        if done % every == 0 or done == len(jobs):
            log(f"[{done}/{len(jobs)}] blocks evaluated")
    return Evaluation(
        plan=plan,
        images={n: images[n] for n in plan.names},
        pooled=scores(total, plan.layout),
        sweep=threshold_sweep(total, plan.layout),
    )
