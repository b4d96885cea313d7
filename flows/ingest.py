"""The ``ingest-dataset`` flow: image/mask pairs from a folder into a Zarr dataset store."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from segflow.flows.config import IngestConfig
from segflow.flows.runs import ingest_labels, named_by
from segflow.flows.summaries import ingest_markdown
from segflow.tasks.ingest.pairs import Pair, Rejection
from segflow.tasks.ingest.samples import PairOutcome
from segflow.tasks.ingest.source_split import SourceSplit
from segflow.tasks.ingest.tasks import (
    build_index,
    find_pairs,
    prepare_store,
    sample_checks,
    source_split,
    write_samples,
)
from segflow.tasks.ingest.writing import SampleWriteError
from segflow.tasks.storage.dataset_writer import lock_store
from segflow.tasks.storage.urls import use_options


class IngestSummary(BaseModel):
    """What an ingest run did; printed by the CLI, returned by the flow."""

    store: str
    samples: int
    written: int
    unchanged: int
    rejected: list[dict[str, str]]
    split: dict[str, int]
    split_source: str = "fractions"
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


def writer_lock(config: IngestConfig) -> AbstractContextManager[Path]:
    """The writer lock of the dataset store, held for the whole flow.

    The CLI takes it first (it is re-entrant), so a second writer fails at once, before
    Prefect starts.
    """
    return lock_store(config.store)


@flow(
    name="ingest-dataset",
    validate_parameters=True,
    flow_run_name=named_by(ingest_labels, IngestConfig),
)
def ingest_dataset(config: IngestConfig) -> IngestSummary:
    """Ingest image/mask pairs from ``config.source`` into the Zarr store ``config.store``.

    Re-running adds only new or changed pairs; bad inputs are recorded in the store and skipped.
    The source and its split (folders, split file) are read first, so a bad split creates
    nothing; then the store's writer lock is held throughout: a second writer fails at once.

    Raises
    ------
    ValueError
        The source gives a bad split: an unreadable or malformed split file, ids in it that
        are not in the source, a sample id in two split folders.
    NothingIngested
        When not a single valid pair was found (the rejections are still recorded).
    LockHeld
        Another process writes the store.
    SampleWriteError
        A sample could not be written (disk full, ...); the samples committed before it are
        indexed first, so the store stays complete and usable.
    """
    use_options(config.storage_options)
    pairs, unpaired = find_pairs(config.source, config.pair_layout())
    given = source_split(config.source, pairs, config.split_file)
    with writer_lock(config):
        return _ingest(config, pairs, unpaired, given)


def _rejections(outcomes: list[PairOutcome]) -> list[Rejection]:
    return [Rejection(o.path, o.reason) for o in outcomes if o.status == "rejected"]


def _ingest(
    config: IngestConfig, pairs: list[Pair], unpaired: list[Rejection], given: SourceSplit
) -> IngestSummary:
    class_names = config.resolved_class_names
    stored = prepare_store(config.store, class_names)
    checks = sample_checks(config.store, pairs, stored, config.size_limits())
    fractions = config.split_fractions()
    try:
        outcomes = write_samples(
            pairs,
            config.store,
            config.mask_rules(),
            checks,
            stored,
            config.workers,
            config.dask_address,
        )
    except SampleWriteError as exc:
        rejected = unpaired + _rejections(exc.outcomes)
        build_index(config.store, rejected, fractions, config.seed, given, checks.image_format)
        raise
    rejected = unpaired + _rejections(outcomes)
    index = build_index(config.store, rejected, fractions, config.seed, given, checks.image_format)
    total = max(1, sum(index["class_counts"]))
    summary = IngestSummary(
        store=config.store,
        samples=index["num_samples"],
        written=sum(o.status == "written" for o in outcomes),
        unchanged=sum(o.status == "unchanged" for o in outcomes),
        rejected=index["rejected"],
        split={name: len(ids) for name, ids in index["split"].items()},
        split_source=index["split_source"],
        class_names=list(class_names),
        class_fractions=[c / total for c in index["class_counts"]],
    )
    create_markdown_artifact(
        ingest_markdown(summary), key="ingest-summary", description="Ingest summary"
    )
    if summary.written + summary.unchanged == 0:
        raise NothingIngested(summary)
    return summary
