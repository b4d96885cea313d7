"""Find image/mask pairs in a source folder."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from segflow.tasks.storage.image_io import IMAGE_SUFFIXES, looks_like_image, name_problem


@dataclass(frozen=True)
class Pair:
    """An image and its mask, matched by file stem."""

    sample_id: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class PairLayout:
    """Where a source folder keeps its images and masks (built by ``IngestConfig.pair_layout``).

    Images are ``<images_dir>/<stem>.*``, their masks ``<masks_dir>/<stem><mask_suffix>.*``.
    """

    images_dir: str
    masks_dir: str
    mask_suffix: str


@dataclass(frozen=True)
class Rejection:
    """An input that was not ingested, and why."""

    path: str
    reason: str


def _by_stem(folder: Path, strip: str, rejected: list[Rejection]) -> dict[str, Path]:
    """Map stems to image files, rejecting non-images, hidden images, ambiguous stems and
    names a store cannot hold (:func:`~segflow.tasks.storage.image_io.name_problem`)."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            continue  # sub-folders are not inputs
        if path.name.startswith("."):
            # A hidden image (.x.png, ..png, macOS's ._x.png) is listed, so that no image goes
            # missing unseen; other hidden files (.DS_Store, .gitkeep) are the OS's, not inputs.
            if looks_like_image(path.name):
                reason = "hidden file (name starts with '.'); rename it to ingest it"
                rejected.append(Rejection(str(path), reason))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            allowed = ", ".join(sorted(IMAGE_SUFFIXES))
            reason = f"not an image file (suffix {path.suffix!r}; allowed {allowed})"
            rejected.append(Rejection(str(path), reason))
            continue
        stem = path.stem
        if strip:
            if not stem.endswith(strip):
                rejected.append(Rejection(str(path), f"mask name lacks the suffix {strip!r}"))
                continue
            stem = stem[: -len(strip)]
        found[stem].append(path)
    unique: dict[str, Path] = {}
    for stem, paths in found.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(p.name for p in paths if p != path)
                rejected.append(Rejection(str(path), f"ambiguous: same stem as {others}"))
        elif problem := name_problem(stem):
            rejected.append(Rejection(str(paths[0]), f"sample name: {problem}"))
        else:
            unique[stem] = paths[0]
    return unique


def find_pairs(source: str | Path, layout: PairLayout) -> tuple[list[Pair], list[Rejection]]:
    """Match the images under `source` with their masks, as `layout` places them.

    Extensions may differ between an image and its mask (``a.jpg`` and ``a.png``).

    Returns
    -------
    pairs, rejected
        Pairs sorted by sample id, and every file that could not be paired with the reason.

    Raises
    ------
    FileNotFoundError
        If either sub-folder is missing.
    """
    root = Path(source).resolve()
    folders = (root / layout.images_dir, root / layout.masks_dir)
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder (images and masks go in {root})")
    rejected: list[Rejection] = []
    images = _by_stem(folders[0], "", rejected)
    masks = _by_stem(folders[1], layout.mask_suffix, rejected)
    for stem in sorted(images.keys() - masks.keys()):
        rejected.append(Rejection(str(images[stem]), "image without mask"))
    for stem in sorted(masks.keys() - images.keys()):
        rejected.append(Rejection(str(masks[stem]), "mask without image"))
    pairs = [Pair(stem, images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())]
    return pairs, rejected
