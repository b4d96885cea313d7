"""Model cards: the markdown description of a registered model and of each of its versions.

A card says what the model was trained on (store, content hash, classes), how (a config
summary), how well (val scores beside the trivial predictors', later the test scores the
evaluate stage appends) and how to load it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlflow import MlflowClient

from segflow.tasks.tracking.registry import ModelRef

# The evaluate stage's section of a version's description starts here (replaced on re-scoring).
TEST_HEADING = "\n## Test scores\n"


@dataclass(frozen=True)
class ModelCard:
    """What a version's card says besides its URI (the train stage fills it in)."""

    store: str  # the dataset store's path
    digest: str  # its content hash (``segflow.dataset_sha256``)
    classes: Sequence[str]
    settings: Mapping[str, object]  # config summary: setting -> value
    val_scores: Mapping[str, float]  # e.g. "val Dice (mean of members)" -> value
    trivial: Mapping[str, float]  # trivial predictor -> its val Dice
    verdict: str  # learned or not, and why


def _rows(values: Mapping[str, object]) -> list[str]:
    def text(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return [f"| {key} | {text(value)} |" for key, value in values.items()]


def render_card(card: ModelCard, uri: str) -> str:
    """The markdown card of the version `uri` (``models:/name/version``)."""
    lines = [
        f"# segflow U-Net `{uri}`",
        "",
        card.verdict,
        "",
        f"**Data**: `{card.store}` (content hash `{card.digest}`)  ",
        f"**Classes**: {', '.join(card.classes)}",
        "",
        "| setting | value |",
        "|---|---|",
        *_rows(card.settings),
        "",
        "| validation | Dice |",
        "|---|---|",
        *_rows(card.val_scores),
        *_rows({f"trivial: {name}": dice for name, dice in card.trivial.items()}),
        "",
        "**Load**: `segflow.tasks.tracking.model.load_model(" + f'"{uri}")`  ',
        f"**Predict**: `segflow infer IMAGES OUT.zarr --model {uri}`",
    ]
    return "\n".join(lines)


def describe_version(name: str, version: str, card: ModelCard) -> None:
    """Set the card as the description of version `version` of `name`, and of `name` itself
    (which describes its newest version)."""
    uri = f"models:/{name}/{version}"
    client = MlflowClient()
    text = render_card(card, uri)
    client.update_model_version(name, version, description=text)
    client.update_registered_model(name, description=f"Newest version: {version}\n\n{text}")


def append_test_scores(ref: ModelRef, run_id: str, scores: Mapping[str, float]) -> None:
    """Put the test `scores` of evaluation run `run_id` under :data:`TEST_HEADING` in the
    description of `ref`'s version (replacing an earlier test section); nothing for a model
    that is not a registered version."""
    if not (ref.name and ref.version):
        return
    client = MlflowClient()
    current = client.get_model_version(ref.name, ref.version).description or ""
    card = current.split(TEST_HEADING)[0]
    table = ["| test | value |", "|---|---|", *_rows(dict(scores))]
    section = f"{TEST_HEADING}\nEvaluation run `{run_id}`.\n\n" + "\n".join(table)
    client.update_model_version(ref.name, ref.version, description=card + section)
