"""Where a benchmark row was measured: the project machine changes between sessions (CPU,
instruction set, hence the precision segflow picks), so rows carry it."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psutil
import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's word where there is none)."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor(),
    )


def cpu_record() -> dict[str, str]:
    """The CPU and the widest instruction set PyTorch uses on it (e.g. ``AVX2``, ``AVX512``)."""
    return {"cpu": cpu_model(), "isa": torch.backends.cpu.get_cpu_capability()}


def machine() -> dict:
    """The machine, the software and the commit measured, and when."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        **cpu_record(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit,
    }
