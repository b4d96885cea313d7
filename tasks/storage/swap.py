"""Putting a finished array folder in place of another in one step: Linux's
``renameat2(RENAME_EXCHANGE)``, or, where the OS or filesystem has none, a move aside first (a
moment without the old folder, never a half-written one). Used by the dataset store's writer
(:mod:`segflow.tasks.storage.dataset_writer`)."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from pathlib import Path


def _load_renameat2():
    """libc's ``renameat2`` (glibc >= 2.28), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the OS or filesystem cannot.

    Raises
    ------
    OSError
        The exchange failed for another reason (a path missing, permissions).
    """
    if _RENAMEAT2 is None:
        return False
    a, b = os.fsencode(first), os.fsencode(second)
    if _RENAMEAT2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # e.g. a filesystem without RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def swap_in(staged: Path, final: Path) -> None:
    """Put `staged` at `final`; an earlier `final` ends up in `staged`'s folder."""
    if not final.exists():
        os.replace(staged, final)
    elif not exchange(staged, final):
        # No atomic exchange: move the old array aside first (a moment without it, never a
        # half-written one), then the new one in.
        os.replace(final, staged.with_name(staged.name + "-old"))
        os.replace(staged, final)
