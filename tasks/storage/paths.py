"""A store's root ``segflow`` attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segflow.tasks.storage.urls import open_group


def read_index(store: str | Path) -> dict[str, Any]:
    """The root ``segflow`` attributes of the store at `store` (a path or a URL)."""
    return dict(open_group(store).attrs["segflow"])
