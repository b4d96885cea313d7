"""The dataset store's samples read and written as objects: what a store holds (on object
storage and on disk), and uploading a sample to object storage.

Object storage has no rename, so :mod:`.dataset_writer` (which holds the store's layout and
commit contract) encodes a sample's arrays into a local staging folder and hands them here:
:func:`upload_sample` lists what the store holds of the sample, withdraws an earlier version's
commit (its mask's ``zarr.json``), deletes that version's objects the new one does not
overwrite, then uploads the new objects, the commit last. :func:`committed_attributes` reads
which samples a store holds committed (on object storage, and on disk through fsspec's local
filesystem: the same documents, without zarr opening every array).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segflow.tasks.storage import urls

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def committed_attributes(store: str | Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """The image's and the mask's attributes of each committed sample, by sample id.

    The sample folders of ``images/`` and ``masks/`` by one listing each, then the
    ``zarr.json`` of every sample in both, fetched at once. A folder without one (a write
    killed before its metadata, or a withdrawn commit) is not committed; zarr would warn about
    it and read each document twice.

    Raises
    ------
    KeyError
        The store has no ``images/`` or no ``masks/`` group.
    """
    fs, path = urls.filesystem(store)
    base = path.rstrip("/")
    folders = {}
    for group in ("images", "masks"):
        try:
            listed = fs.ls(f"{base}/{group}", detail=False)
        except FileNotFoundError:
            raise KeyError(f"{store}: no {group}/ group") from None
        folders[group] = {key.rstrip("/").rsplit("/", 1)[-1] for key in listed} - {"zarr.json"}
    ids = sorted(folders["images"] & folders["masks"])
    keys = [f"{base}/{group}/{i}/zarr.json" for i in ids for group in ("images", "masks")]
    # Not fs.cat: it expands glob characters, which sample ids and paths may hold ("a[1]").
    bodies = fs.cat_ranges(keys, None, None, on_error="return") if keys else []
    documents = {}
    for key, body in zip(keys, bodies, strict=True):
        if isinstance(body, FileNotFoundError):
            continue
        if isinstance(body, BaseException):
            raise body
        documents[key] = body
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for sample_id in ids:
        image_doc = documents.get(f"{base}/images/{sample_id}/zarr.json")
        mask_doc = documents.get(f"{base}/masks/{sample_id}/zarr.json")
        if image_doc is None or mask_doc is None:
            continue
        image_attrs = json.loads(image_doc).get("attributes", {})
        mask_attrs = json.loads(mask_doc).get("attributes", {})
        if "sha256" not in image_attrs or mask_attrs.get("image_sha256") != image_attrs["sha256"]:
            continue
        found[sample_id] = (image_attrs, mask_attrs)
    return found


def upload_sample(store: str, sample_id: str, staged: Mapping[str, Path]) -> None:
    """Replace sample `sample_id` in `store` by the arrays staged locally, committing it last.

    Requests per sample: two listings (what the store holds of it), one PUT per object and,
    only when it replaces something, one DELETE of the old commit and one batch DELETE of the
    objects the new version does not overwrite. No metadata is read: the objects are known
    locally.

    Parameters
    ----------
    staged
        The local folder of each encoded array, by group (``"images"``, ``"masks"``).
    """
    fs, path = urls.filesystem(store)
    arrays = {group: f"{path.rstrip('/')}/{group}/{sample_id}" for group in ("images", "masks")}
    objects: dict[str, Path] = {}
    for group in ("images", "masks"):
        objects |= _staged_objects(staged[group], arrays[group])
    commit = f"{arrays['masks']}/zarr.json"  # the mask's metadata, with image_sha256
    held = _stored_objects(fs, arrays.values())
    if commit in held:
        fs.rm_file(commit)  # withdrawn: from here on the old version is not committed
    stale = sorted(held - objects.keys() - {commit})
    if stale:  # an old array's chunks must not outlive it (a missing chunk reads as fill)
        fs.rm(stale)
    last = objects.pop(commit)
    if objects:
        fs.put([str(local) for local in objects.values()], list(objects))
    fs.put_file(str(last), commit)  # the commit


def _staged_objects(folder: Path, prefix: str) -> dict[str, Path]:
    """The files of the array staged in `folder`, by their key under `prefix`."""
    return {
        f"{prefix}/{file.relative_to(folder).as_posix()}": file
        for file in sorted(folder.rglob("*"))
        if file.is_file()
    }


def _stored_objects(fs: AbstractFileSystem, prefixes: Iterable[str]) -> set[str]:
    """Keys of every object under the `prefixes` (array folders): one listing of each."""
    found: set[str] = set()
    for prefix in prefixes:
        parent, name = prefix.rsplit("/", 1)
        # s3fs and gcsfs filter by `prefix` on the server (one LIST, no HEAD of the folder when
        # it is empty); other filesystems may ignore it, hence the filter here too.
        listed = fs.find(parent, prefix=f"{name}/")
        found.update(key for key in listed if key.startswith(f"{prefix}/"))
    return found
