"""The model bundle inside a prediction store, as Zarr arrays, and its local working copy.

``OUT/model/<file>`` holds each file of the bundle folder as a 1-D uint8 array (its name in
the array's ``segflow.file`` attribute), so the store is Zarr throughout and viewers open it
without warnings, while the store still carries the model that wrote it. Workers extract it
once per machine into a cache folder named by the bundle's SHA-256.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import zarr

from segflow.tasks.storage.bundle import bundle_digest
from segflow.tasks.storage.urls import open_group

_FILE_CHUNK = 8 * 2**20  # bytes per chunk of a bundle file


def store_bundle(root: zarr.Group, folder: Path) -> None:
    """Write the files of the bundle `folder` into ``root/model`` (replacing what it held)."""
    group = root.require_group("model")
    group.attrs["segflow"] = "the model bundle used"
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        array = group.create_array(
            path.name,
            shape=data.shape,
            dtype="uint8",
            chunks=(min(_FILE_CHUNK, max(1, data.size)),),
            compressors=None,
            attributes={"segflow": {"file": path.name}},
            overwrite=True,
        )
        array[:] = data


def bundle_cache(digest: str) -> Path:
    """This machine's folder for the bundle of SHA-256 `digest`."""
    return Path(tempfile.gettempdir()) / "segflow-bundles" / digest


def extract_bundle(out: str | Path, dest: str | Path, digest: str) -> Path:
    """The bundle of the prediction store `out` as a folder at `dest`, extracted unless there.

    Extracted into a temporary sibling, checked against `digest`, then renamed into place, so
    workers extracting at once never see half a bundle.

    Raises
    ------
    ValueError
        The stored bundle's files do not have SHA-256 `digest`.
    """
    dest = Path(dest)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    group = open_group(out, "model", mode="r")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        for _, array in group.arrays():
            (tmp / array.attrs["segflow"]["file"]).write_bytes(np.asarray(array[:]).tobytes())
        if bundle_digest(tmp) != digest:
            raise ValueError(f"{out}/model: the stored bundle is not the one recorded ({digest})")
        try:
            os.rename(tmp, dest)
        except OSError:  # another worker put it there first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
