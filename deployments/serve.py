"""Serve the deployments from this process: ``segflow serve``, ``python -m
segflow.deployments.serve``.

The process registers the deployments of :data:`segflow.deployments.specs.SPECS` with the Prefect
server named by ``PREFECT_API_URL`` and runs the flow runs they receive (from the UI, the CLI or a
schedule) until it is stopped. Schedules are created inactive unless ``--schedules`` is given, so
a first start never fires against folders that do not exist yet; they are paused again when the
process stops.

Prefect is imported inside the functions: :func:`main` must choose Prefect's home first.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from segflow.deployments.specs import SPECS, select
from segflow.flows.env import ready_for_prefect, use_local_defaults

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DATA_ENV = "SEGFLOW_DATA"


class NoPrefectServer(RuntimeError):
    """No ``PREFECT_API_URL``: a temporary server would vanish with the serving process."""


def default_data_root() -> Path:
    """``$SEGFLOW_DATA``, else ``./data``."""
    return Path(os.environ.get(DATA_ENV, "data"))


def build_deployments(
    data_root: str | Path, *, schedules: bool, only: Sequence[str] | None = None
) -> list[RunnerDeployment]:
    """One deployment per selected spec, its example paths under `data_root` (made absolute).

    `schedules` sets whether the example schedules are active. Raises ``ValueError`` for an
    unknown name in `only`.
    """
    from prefect.schedules import Cron

    root = Path(data_root).resolve()
    return [
        spec.load_flow().to_deployment(
            name=spec.name,
            description=spec.description,
            tags=list(spec.tags),
            parameters=spec.parameters(root),
            schedules=[Cron(spec.cron, timezone="UTC", active=schedules)] if spec.cron else None,
        )
        for spec in select(only)
    ]


def serve_deployments(
    data_root: str | Path, *, schedules: bool, only: Sequence[str] | None = None
) -> None:
    """Register the deployments and run their flow runs until interrupted.

    Raises
    ------
    NoPrefectServer
        No Prefect server is configured.
    """
    from prefect import serve
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise NoPrefectServer(
            "segflow serve needs a Prefect server: start one with `prefect server start` and "
            "set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    serve(*build_deployments(data_root, schedules=schedules, only=only))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``segflow serve``."""
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help=f"folder the example parameters point into (default: ${DATA_ENV} or ./data)",
    )
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="activate the example schedules (default: created inactive)",
    )
    names = [s.full_name for s in SPECS]
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=names + [s.flow_name for s in SPECS],
        help="serve only these (flow/deployment or flow name): " + ", ".join(names),
    )


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the subcommands of ``segflow`` (the ``segflow.commands`` entry point)."""
    serve = commands.add_parser(
        "serve", help="serve the flows as deployments to a Prefect server (PREFECT_API_URL)"
    )
    add_arguments(serve)
    serve.set_defaults(run=run)


def run(ns: argparse.Namespace) -> int:
    """Serve with parsed options; returns an exit status."""
    ready_for_prefect()
    try:
        serve_deployments(ns.data_root or default_data_root(), schedules=ns.schedules, only=ns.only)
    except NoPrefectServer as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m segflow.deployments.serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m segflow.deployments.serve", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    use_local_defaults()
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
