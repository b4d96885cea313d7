"""The MLflow model registry: which version a URI names, test scores, and the promotion alias."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

TEST_DICE_TAG = "segflow.test_dice"
TEST_KEY_TAG = "segflow.test_key"

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/")


@dataclass(frozen=True)
class ModelRef:
    """A model resolved to what produced it; name and version only for registered models."""

    uri: str
    run_id: str | None
    name: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def resolve_model(uri: str) -> ModelRef:
    """Resolve ``models:/name@alias``, ``models:/name/N`` or ``runs:/id/...`` now, so that a
    later move of the alias does not change what the URI meant. Anything else (a bundle folder)
    resolves to no run."""
    if match := _MODELS_URI.match(uri):
        client = MlflowClient()
        name = match["name"]
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        else:
            version = client.get_model_version(name, match["version"])
        return ModelRef(uri, version.run_id, name, str(version.version))
    if match := _RUNS_URI.match(uri):
        return ModelRef(uri, match["run_id"])
    return ModelRef(uri, None)


def model_uri_problem(uri: str, tracking_uri: str) -> str | None:
    """Why the ``models:/`` `uri` names no model version at `tracking_uri` (listing the
    registered models when its name is not one of them), or None when it names one."""
    match = _MODELS_URI.match(uri)
    if match is None:
        return "not of the form models:/NAME@ALIAS or models:/NAME/VERSION"
    client = MlflowClient(tracking_uri=tracking_uri)
    names = sorted(model.name for model in client.search_registered_models())
    if match["name"] not in names:
        return f"no registered model {match['name']} at {tracking_uri}; registered: " + (
            ", ".join(names) or "none"
        )
    try:
        if match["alias"]:
            client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            client.get_model_version(match["name"], match["version"])
    except MlflowException:
        which = f"alias {match['alias']}" if match["alias"] else f"version {match['version']}"
        return f"{match['name']} has no {which} at {tracking_uri}"
    return None


@dataclass(frozen=True)
class Promotion:
    """Outcome of a promotion attempt."""

    promoted: bool
    reason: str
    champion_version: str | None


def record_test_score(ref: ModelRef, dice: float, key: str) -> None:
    """Tag the model version with its test Dice and what it was measured on."""
    if ref.name and ref.version:
        client = MlflowClient()
        client.set_model_version_tag(ref.name, ref.version, TEST_DICE_TAG, f"{dice:.6f}")
        client.set_model_version_tag(ref.name, ref.version, TEST_KEY_TAG, key)


def promote_if_better(ref: ModelRef, dice: float, key: str, alias: str) -> Promotion:
    """Point `alias` at `ref`'s version if its test Dice beats the current holder's on the same
    test pixels (`key`), or if no version holds the alias yet.

    A holder scored on other data (or never scored) is not comparable: the alias stays and the
    reason says what to do.
    """
    if not (ref.name and ref.version):
        return Promotion(False, f"{ref.uri} is not a registered model version", None)
    client = MlflowClient()
    try:
        holder = client.get_model_version_by_alias(ref.name, alias)
    except MlflowException:
        holder = None
    if holder is None:
        client.set_registered_model_alias(ref.name, alias, ref.version)
        return Promotion(True, f"no version held '{alias}'", ref.version)
    if str(holder.version) == ref.version:
        return Promotion(False, f"version {ref.version} already holds '{alias}'", ref.version)
    if holder.tags.get(TEST_KEY_TAG) != key:
        return Promotion(
            False,
            f"'{alias}' (version {holder.version}) has no test Dice on these test images; "
            "evaluate its predictions on them first",
            str(holder.version),
        )
    best = float(holder.tags[TEST_DICE_TAG])
    if dice <= best:
        return Promotion(
            False,
            f"test Dice {dice:.4f} does not beat '{alias}' (version {holder.version}: {best:.4f})",
            str(holder.version),
        )
    client.set_registered_model_alias(ref.name, alias, ref.version)
    return Promotion(
        True, f"test Dice {dice:.4f} beats version {holder.version} ({best:.4f})", ref.version
    )
