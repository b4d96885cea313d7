"""Embedded defaults for running on one machine with no servers started by hand."""

from __future__ import annotations

import os
from pathlib import Path


def use_local_defaults(home: str | Path | None = None) -> Path:
    """Point Prefect at a project-local home unless the environment already chose.

    Must run before Prefect is imported, which creates its home: a command that fails its
    checks before importing Prefect creates nothing. Returns the segflow home folder
    (``.segflow``).
    """
    root = Path(home or os.environ.get("SEGFLOW_HOME", ".segflow")).resolve()
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    # No network here: Prefect's telemetry would log connection errors on every run.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The client's own telemetry, and its first-run notice on a terminal, follow DO_NOT_TRACK.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # One progress line per artifact file floods the flow logs when a model is fetched.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return root


def ready_for_prefect() -> None:
    """Create Prefect's home (with its parents: Prefect makes only the last folder) once a
    command has passed its checks and is about to start Prefect; its SQLite database cannot be
    created in a missing folder."""
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
