"""The ``ingest-dataset`` flow: image/mask pairs from a folder into a Zarr dataset store."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from segflow.flows.config import IngestConfig
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import Rejection
from segflow.tasks.ingest.tasks import discover_pairs, index_store, prepare_store, write_samples


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


def _markdown(summary: IngestSummary) -> str:
    lines = [
        f"# Ingest into `{summary.store}`",
        "",
        f"{summary.samples} samples stored ({summary.written} written, {summary.unchanged} "
        f"unchanged); split {summary.split}; {len(summary.rejected)} inputs rejected.",
        "",
        "| class | pixel fraction |",
        "|---|---|",
    ]
    fractions = zip(summary.class_names, summary.class_fractions, strict=True)
    lines += [f"| {name} | {fraction:.4f} |" for name, fraction in fractions]
    if summary.rejected:
        lines += ["", "| rejected input | reason |", "|---|---|"]
        lines += [f"| `{r['path']}` | {r['reason']} |" for r in summary.rejected]
    return "\n".join(lines)


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
    pairs, unpaired = discover_pairs(
        config.source, config.images_dir, config.masks_dir, config.mask_suffix
    )
    rules = MaskRules(config.num_classes, config.foreground_value, config.invert)
    outcomes = write_samples(
        pairs, config.store, rules, config.max_pixels, stored, config.workers, config.dask_address
    )
    rejected = unpaired + [Rejection(o.path, o.reason) for o in outcomes if o.status == "rejected"]
    fractions = {
        "train": 1.0 - config.val_fraction - config.test_fraction,
        "val": config.val_fraction,
        "test": config.test_fraction,
    }
    index = index_store(config.store, rejected, fractions, config.seed)
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
    create_markdown_artifact(_markdown(summary), key="ingest-summary", description="Ingest summary")
    if summary.written + summary.unchanged == 0:
        raise NothingIngested(summary)
    return summary
