"""Where a store lives, and its root ``segflow`` attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr


def local_path(store: str | Path) -> Path:
    """The filesystem path of a local store; remote URLs are not supported for writing yet."""
    text = str(store)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"{text}: only local stores can be written (remote URLs are read-only)")
    return Path(text.removeprefix("file://"))


def read_index(store: str | Path) -> dict[str, Any]:
    """The root ``segflow`` attributes."""
    return dict(zarr.open_group(local_path(store), mode="r").attrs["segflow"])
