"""Run a benchmark step in a newly spawned interpreter.

segflow switches glibc's malloc to keeping freed memory (`tasks/runtime/allocator.py`) for the
rest of a process, and nothing can switch it back. Steps that must start from a clean process
state (a competitor as its users run it, or rows that differ only in that setting) run through
here.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def in_fresh_process(function: Callable[..., T], *args) -> T:
    """`function(*args)` in a new spawned process; `function` must be importable by name."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()
