"""What the blocks of an image need from the prediction store, read once per run for all of
them (:func:`block_targets`) and handed to each: the model bundle's SHA-256 and the image's
level-0 arrays (:class:`~segflow.tasks.storage.levels.LevelArrays`). A block then reads no
metadata, and on object storage costs one PUT per shard and no other request."""

from __future__ import annotations

from dataclasses import dataclass

from segflow.tasks.storage.levels import LevelArrays, open_level
from segflow.tasks.storage.paths import read_index


@dataclass(frozen=True)
class BlockTarget:
    """Where the blocks of one image go (picklable, for Dask workers)."""

    digest: str
    arrays: LevelArrays


def block_target(out: str, name: str, digest: str | None = None) -> BlockTarget:
    """The :class:`BlockTarget` of image `name` in `out` (its digest read unless given)."""
    digest = digest or read_index(out)["model_sha256"]
    return BlockTarget(digest, open_level(out, name))


def block_targets(out: str, names: list[str]) -> dict[str, BlockTarget | None]:
    """The :class:`BlockTarget` of each image, the digest read once; None for an image whose
    arrays cannot be opened here: its blocks try again, and fail with that image alone."""
    targets: dict[str, BlockTarget | None] = {}
    digest = None
    for name in names:
        try:
            targets[name] = block_target(out, name, digest)
        except Exception:  # the image's error: its blocks meet it again and report it
            targets[name] = None
        else:
            digest = targets[name].digest
    return targets
