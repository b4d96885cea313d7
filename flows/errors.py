"""Errors a user can act on: reported by the CLI in one line, without Prefect's traceback."""

from __future__ import annotations

import logging


class UsageError(Exception):
    """A command that cannot run as typed (a path, store, model or option): the CLI reports it
    in one line with exit status 2, before anything starts or is created."""


def user_error(exc: BaseException, command: str) -> tuple[int, str] | None:
    """The exit status and the one line (without ``error:``) the CLI reports for `exc`: 2 for
    a usage mistake (bad option values included), 1 for the failures of
    :func:`reported_errors`; None for anything else, a bug, which keeps its traceback."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'options'}: {error['msg']}"
            for error in exc.errors()
        )
        return 2, f"invalid {command} options: {problems} (see segflow {command} --help)"
    if isinstance(exc, UsageError):
        return 2, str(exc)
    return (1, str(exc)) if isinstance(exc, reported_errors()) else None


def reported_errors() -> tuple[type[Exception], ...]:
    """Errors a user can act on: the CLI reports them in one line with exit status 1.

    Imported only once a command has failed, so ``segflow --help`` stays quick.
    """
    from segflow.tasks.ingest.writing import SampleWriteError
    from segflow.tasks.runtime.locks import LockHeld
    from segflow.tasks.storage.predictions import LineageError, OldStoreError
    from segflow.tasks.train.distributed_launch import RankFailed

    return (LockHeld, SampleWriteError, LineageError, OldStoreError, RankFailed)


class _NoTracebackForReported(logging.Filter):
    """Prefect logs a failed task or flow run with its traceback; for the errors the CLI
    reports in one line (a user's mistake, not a bug) the traceback is noise: keep the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], reported_errors()):
            record.exc_info, record.exc_text = None, None
        return True


_FILTER = _NoTracebackForReported()


def quiet_reported_tracebacks() -> None:
    """Drop the traceback from Prefect's log records of failed task and flow runs when the
    error is one of :func:`reported_errors` (idempotent)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
