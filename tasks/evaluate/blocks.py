"""Tally every block of an evaluation plan, in this process or on Dask, and score the sums."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from segflow.tasks.evaluate.plan import Plan
from segflow.tasks.evaluate.scoring import Scores, Tally, block_tally, scores, threshold_sweep
from segflow.tasks.runtime.cluster import map_unordered

# Below this many pixels one in-process worker beats a LocalCluster, whose start-up (~5 s)
# outweighs the work: 8192² took 2.5 s in-process, 6.9 s on 2 workers (benchmarks/README.md).
IN_PROCESS_PIXELS = 2**28


def default_evaluation_workers(plan: Plan, cores: int) -> int:
    """One in-process worker for small evaluations, else one per core."""
    pixels = sum((r[1] - r[0]) * (r[3] - r[2]) for _, r in plan.jobs)
    return 1 if pixels <= IN_PROCESS_PIXELS else cores


@dataclass
class Evaluation:
    """Scores per image and pooled over all images, and the pooled threshold sweep."""

    plan: Plan
    images: dict[str, Scores]
    pooled: Scores
    sweep: dict[str, list[float]]


def evaluate(
    plan: Plan,
    *,
    workers: int = 1,
    dask_address: str | None = None,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Tally every block of `plan` (in this process for one worker, else on Dask, see
    :func:`segflow.tasks.runtime.cluster.map_unordered`) and score them.

    Blocks finish in any order; an image is scored as soon as its last block is in, so only
    the tallies of unfinished images are held.
    """
    jobs = plan.jobs
    remaining = {name: len(plan.regions[name]) for name in plan.names}
    partial: dict[str, Tally] = {}
    images: dict[str, Scores] = {}
    total: Tally | None = None
    every = max(1, len(jobs) // 20)
    arguments = [(plan.predictions, plan.store, n, r, plan.layout) for n, r in jobs]
    results = map_unordered(
        block_tally, arguments, workers=workers, dask_address=dask_address, log=log
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
    assert total is not None and not partial
    return Evaluation(
        plan=plan,
        images={n: images[n] for n in plan.names},
        pooled=scores(total, plan.layout),
        sweep=threshold_sweep(total, plan.layout),
    )
