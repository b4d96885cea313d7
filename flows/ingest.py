"""The ``ingest-dataset`` flow: image/mask pairs from a folder into a Zarr dataset store."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from segflow.flows.config import IngestConfig
from segflow.flows.summaries import ingest_markdown
from segflow.tasks.ingest.pairs import Rejection
from segflow.tasks.ingest.tasks import build_index, find_pairs, prepare_store, write_samples


class IngestSummary(BaseModel):
    """What an ingest run did; printed by the CLI, returned by the flow."""

    store: str
    samples: int
    written: int
    unchanged: int
    rejected: list[dict[str, str]]
    split: dict[str, int]
    class_names: list[str]
    class_fractions: list[float]


class NothingIngested(RuntimeError):
    """No valid pair was found; carries the summary with every rejection."""

    def __init__(self, summary: IngestSummary) -> None:
        super().__init__(
            f"no valid image/mask pair ingested into {summary.store}; "
            f"{len(summary.rejected)} inputs rejected"
        )
        self.summary = summary


@flow(name="ingest-dataset", validate_parameters=True)
def ingest_dataset(config: IngestConfig) -> IngestSummary:
    """Ingest image/mask pairs from ``config.source`` into the Zarr store ``config.store``.

    Re-running adds only new or changed pairs; bad inputs are recorded in the store and skipped.

    Raises
    ------
    NothingIngested
        When not a single valid pair was found (the rejections are still recorded).
    """
    class_names = config.resolved_class_names
    stored = prepare_store(config.store, class_names)
    pairs, unpaired = find_pairs(config.source, config.pair_layout())
    outcomes = write_samples(
        pairs,
        config.store,
        config.mask_rules(),
        config.max_pixels,
        stored,
        config.workers,
        config.dask_address,
    )
    rejected = unpaired + [Rejection(o.path, o.reason) for o in outcomes if o.status == "rejected"]
    index = build_index(config.store, rejected, config.split_fractions(), config.seed)
    total = max(1, sum(index["class_counts"]))
    summary = IngestSummary(
        store=config.store,
        samples=index["num_samples"],
        written=sum(o.status == "written" for o in outcomes),
        unchanged=sum(o.status == "unchanged" for o in outcomes),
        rejected=index["rejected"],
        split={name: len(ids) for name, ids in index["split"].items()},
        class_names=list(class_names),
        class_fractions=[c / total for c in index["class_counts"]],
    )
    create_markdown_artifact(
        ingest_markdown(summary), key="ingest-summary", description="Ingest summary"
    )
    if summary.written + summary.unchanged == 0:
        raise NothingIngested(summary)
    return summary
