"""Find image/mask pairs in a source folder: one images/masks pair of folders, or one per split
(``train/``, ``val/``, ``test/``). The source is a local folder or a URL (``s3://b/raw``),
whose "folders" are the prefixes of its objects."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from segflow.tasks.storage import files
from segflow.tasks.storage.dataset import SPLITS
from segflow.tasks.storage.files import Location
from segflow.tasks.storage.image_io import IMAGE_SUFFIXES, looks_like_image, name_problem


@dataclass(frozen=True)
class Pair:
    """An image and its mask, matched by file stem; `split` names the split folder they are in
    (None in the plain layout). Files are local paths, or URLs (``str``) in remote storage."""

    sample_id: str
    image: Location
    mask: Location
    split: str | None = None


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


def _by_stem(folder: Location, strip: str, rejected: list[Rejection]) -> dict[str, Location]:
    """Map stems to image files, rejecting non-images, hidden images, ambiguous stems and
    names a store cannot hold (:func:`~segflow.tasks.storage.image_io.name_problem`)."""
    found: dict[str, list[Location]] = defaultdict(list)
    for path, is_folder in files.entries(folder):
        if is_folder:
            continue  # sub-folders are not inputs
        name, suffix = files.name_of(path), files.suffix_of(path)
        if name.startswith("."):
            # A hidden image (.x.png, ..png, macOS's ._x.png) is listed, so that no image goes
            # missing unseen; other hidden files (.DS_Store, .gitkeep) are the OS's, not inputs.
            if looks_like_image(name):
                reason = "hidden file (name starts with '.'); rename it to ingest it"
                rejected.append(Rejection(str(path), reason))
            continue
        if suffix.lower() not in IMAGE_SUFFIXES:
            allowed = ", ".join(sorted(IMAGE_SUFFIXES))
            reason = f"not an image file (suffix {suffix!r}; allowed {allowed})"
            rejected.append(Rejection(str(path), reason))
            continue
        stem = files.stem_of(path)
        if strip:
            if not stem.endswith(strip):
                rejected.append(Rejection(str(path), f"mask name lacks the suffix {strip!r}"))
                continue
            stem = stem[: -len(strip)]
        found[stem].append(path)
    unique: dict[str, Location] = {}
    for stem, paths in found.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(files.name_of(p) for p in paths if p != path)
                rejected.append(Rejection(str(path), f"ambiguous: same stem as {others}"))
        elif problem := name_problem(stem):
            rejected.append(Rejection(str(paths[0]), f"sample name: {problem}"))
        else:
            unique[stem] = paths[0]
    return unique


def split_folders(source: str | Path, layout: PairLayout) -> dict[str | None, Location]:
    """The folders of `source` that hold an images and a masks folder, by the split they give.

    The plain layout (``source/images``, ``source/masks``) gives ``{None: source}``; the split
    layout (``source/train/images``, ``source/train/masks``, and the same under ``val/`` and
    ``test/`` when present) gives ``{"train": source/train, ...}``. Paths are as `source` is
    given, so messages read as the user typed them; a URL's folders are URLs.

    Raises
    ------
    FileNotFoundError
        `source` or one of the folders its layout needs is missing (remote: no object under
        that prefix).
    StorageError
        A remote `source` whose storage does not answer.
    ValueError
        `source` is a file, mixes both layouts, or has split folders without ``train/``.
    """
    root = files.location(source)
    expected = f"{layout.images_dir}/ and {layout.masks_dir}/"
    if not files.exists(root):
        raise FileNotFoundError(
            f"source {source} does not exist (give the folder holding {layout.images_dir}/)"
        )
    if not files.is_dir(root):
        raise ValueError(f"source {source} is a file, not a folder (give the folder above it)")
    splits = [name for name in SPLITS if files.is_dir(files.child(root, name))]
    if splits and files.is_dir(files.child(root, layout.images_dir)):
        raise ValueError(
            f"source {source} holds both {layout.images_dir}/ and {'/, '.join(splits)}/ (use "
            f"one layout: {expected}, or train/, val/, test/ each holding {expected})"
        )
    if splits and "train" not in splits:
        raise ValueError(f"source {source} has {splits[0]}/ but no train/ folder")
    folders = {name: files.child(root, name) for name in splits} or {None: root}
    for name, folder in folders.items():
        for sub in (layout.images_dir, layout.masks_dir):
            if not files.is_dir(files.child(folder, sub)):
                where = f"{source}/{name}" if name else str(source)
                raise FileNotFoundError(
                    f"source {source} has no {f'{name}/' if name else ''}{sub}/ folder "
                    f"(expected {where}/{layout.images_dir}/ and {where}/{layout.masks_dir}/)"
                )
    return folders


def _pairs_in(
    folder: Location, split: str | None, layout: PairLayout, rejected: list[Rejection]
) -> dict[str, Pair]:
    """The pairs of one images/masks pair of folders by sample id; unpaired files rejected."""
    images = _by_stem(files.child(folder, layout.images_dir), "", rejected)
    masks = _by_stem(files.child(folder, layout.masks_dir), layout.mask_suffix, rejected)
    for stem in sorted(images.keys() - masks.keys()):
        rejected.append(Rejection(str(images[stem]), "image without mask"))
    for stem in sorted(masks.keys() - images.keys()):
        rejected.append(Rejection(str(masks[stem]), "mask without image"))
    return {s: Pair(s, images[s], masks[s], split) for s in sorted(images.keys() & masks.keys())}


def find_pairs(source: str | Path, layout: PairLayout) -> tuple[list[Pair], list[Rejection]]:
    """Match the images under `source` with their masks, as `layout` places them.

    Extensions may differ between an image and its mask (``a.jpg`` and ``a.png``). In the split
    layout (:func:`split_folders`) each pair carries the split of its folder. Local files are
    absolute paths; files under a URL are URLs, with the same sample ids.

    Returns
    -------
    pairs, rejected
        Pairs sorted by sample id, and every file that could not be paired with the reason.

    Raises
    ------
    FileNotFoundError, ValueError
        A source of no known layout (:func:`split_folders`), or the same sample id in two split
        folders (a sample belongs to one split).
    StorageError
        A remote `source` whose storage does not answer.
    """
    rejected: list[Rejection] = []
    found: dict[str, Pair] = {}
    for split, folder in split_folders(source, layout).items():
        for sample_id, pair in _pairs_in(files.resolved(folder), split, layout, rejected).items():
            if sample_id in found:
                raise ValueError(
                    f"sample id {sample_id!r} is in two split folders: {found[sample_id].image} "
                    f"and {pair.image} (rename one: ids must be unique across the splits)"
                )
            found[sample_id] = pair
    return [found[s] for s in sorted(found)], rejected
