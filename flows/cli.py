"""The ``segflow`` command: one subcommand per stage.

Options are generated from the flows' pydantic configs, so each setting (default, bounds,
description) is defined once, in :mod:`segflow.flows.config`. This module parses and dispatches;
the text a command prints comes from :mod:`segflow.flows.summaries`.

``segflow serve`` belongs to the layer above, :mod:`segflow.deployments`, which imports the
flows; it arrives through the entry-point group :data:`COMMANDS_GROUP` (``pyproject.toml``), so
imports keep running one way (deployments -> flows) while ``segflow`` stays the one command, and
a deployment package can add a command without the flows knowing it.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import typing
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points, version
from pathlib import Path

from pydantic import BaseModel, ValidationError

from segflow.flows.config import EvaluateConfig, InferConfig, IngestConfig, TrainConfig
from segflow.flows.config.pipeline import load_pipeline_config
from segflow.flows.env import ready_for_prefect, use_local_defaults
from segflow.flows.errors import UsageError, quiet_reported_tracebacks, user_error
from segflow.flows.options import OneLineParser, add_config_options, config_from_options
from segflow.flows.preflight import check_config
from segflow.flows.summaries import (
    evaluate_text,
    infer_text,
    ingest_text,
    pipeline_text,
    train_text,
)
from segflow.flows.synth_command import add_synth_command
from segflow.tasks.runtime.watchdog import start_watchdog

# Entry points `name = "module:function"`: function(commands) adds the sub-parser `name` to
# `commands` and sets its `run` default (namespace -> exit status).
COMMANDS_GROUP = "segflow.commands"

Subcommands = argparse._SubParsersAction  # what add_subparsers() returns; argparse names it so


def _show(summary: BaseModel, as_json: bool, text: Callable[[typing.Any], str]) -> None:
    """Print `summary` as JSON, or as the terminal text `text` makes of it."""
    print(summary.model_dump_json(indent=2) if as_json else text(summary))


def _ingest(ns: argparse.Namespace) -> int:
    config = config_from_options(IngestConfig, ns)
    check_config(config)
    ready_for_prefect()
    from segflow.flows.ingest import NothingIngested, ingest_dataset, writer_lock

    try:
        with writer_lock(config):
            summary = ingest_dataset(config)
    except NothingIngested as exc:
        _show(exc.summary, ns.json, ingest_text)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _show(summary, ns.json, ingest_text)
    return 0


def _train(ns: argparse.Namespace) -> int:
    config = config_from_options(TrainConfig, ns)
    check_config(config)
    ready_for_prefect()
    from segflow.flows.train import train_unet, writer_lock

    with writer_lock(config):
        summary = train_unet(config)
    _show(summary, ns.json, lambda summary: train_text(summary, config.workdir))
    return 0


def _infer(ns: argparse.Namespace) -> int:
    config = config_from_options(InferConfig, ns)
    check_config(config)
    ready_for_prefect()
    from segflow.flows.infer import infer_images, writer_lock

    with writer_lock(config):
        summary = infer_images(config)
    _show(summary, ns.json, infer_text)
    return 1 if summary.failed or (summary.images == 0) else 0


def _evaluate(ns: argparse.Namespace) -> int:
    config = config_from_options(EvaluateConfig, ns)
    check_config(config)
    ready_for_prefect()
    from segflow.flows.evaluate import evaluate_predictions

    _show(evaluate_predictions(config), ns.json, evaluate_text)
    return 0


def _print_pipeline(summary: BaseModel, as_json: bool) -> None:
    # PREFECT_HOME is set by main() (use_local_defaults) before any command runs.
    _show(summary, as_json, lambda s: pipeline_text(s, os.environ["PREFECT_HOME"]))


def _pipeline_overrides(ns: argparse.Namespace) -> list[str]:
    """``--stores`` and ``--dask-address`` as overrides, before the user's ``--set``."""
    given = [f"stores={ns.stores}"] if ns.stores else []
    if ns.dask_address:
        given += [f"{stage}.dask_address={ns.dask_address}" for stage in DASK_STAGES]
    return [*given, *ns.overrides]


DASK_STAGES = ("ingest", "infer", "evaluate")


def _pipeline(ns: argparse.Namespace) -> int:
    try:
        config = load_pipeline_config(ns.source, ns.workdir, ns.config, _pipeline_overrides(ns))
    except ValidationError:
        raise  # main() reports it
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    check_config(config.ingest_config())
    ready_for_prefect()
    from segflow.flows.pipeline import run_pipeline  # imports Prefect: after the checks

    _print_pipeline(run_pipeline(config), ns.json)
    return 0


# The demo's settings: a short training so the whole pipeline takes minutes on 2 CPU cores
# (`segflow train` defaults are sized for real data); every image predicted, so the large one
# can be viewed; the model promoted to `champion` when it beats the holder. It registers under
# the default name, so `segflow infer` and its default --model find the demo's model.
DEMO_SETTINGS = [
    "train.epochs=8",
    "train.patches_per_epoch=128",
    "train.patch_size=128",
    "train.base_channels=16",
    "train.val_max_tiles=32",
    "infer.split=null",
    "evaluate.promote=true",
]


def _demo(ns: argparse.Namespace) -> int:
    ready_for_prefect()
    from segflow.flows.pipeline import run_pipeline
    from segflow.tasks.demo.large import write_large_pair
    from segflow.tasks.demo.synth import SynthSpec, write_dataset

    workdir = ns.workdir.resolve()
    source = workdir / "data"
    if not (source / "images").is_dir():
        print(f"generating a synthetic dataset under {source}")
        sparse = SynthSpec(fg_fraction=0.05)
        write_dataset(source, count=24, size=(256, 256), spec=sparse, seed=0)
        write_large_pair(source, size=ns.large, spec=sparse, seed=0)
    config = load_pipeline_config(str(source), str(workdir), overrides=DEMO_SETTINGS)
    _print_pipeline(run_pipeline(config), as_json=False)
    return 0


# One command per stage flow: name, help, config, positional fields, run, what --json prints.
_STAGE_COMMANDS = (
    ("ingest", "ingest image/mask pairs into a Zarr store", IngestConfig, ("source", "store"),
     _ingest, "summary"),
    ("train", "balance classes and train a U-Net on a store", TrainConfig, ("store",),
     _train, "summary"),
    ("infer", "tiled inference over images of any size", InferConfig, ("input", "output"),
     _infer, "summary"),
    ("evaluate", "score predictions against a store's masks, log them to MLflow", EvaluateConfig,
     ("predictions", "store"), _evaluate, "metrics"),
)  # fmt: skip


def _add_stage_commands(commands: Subcommands) -> None:
    for name, help_text, model, positional, run, printed in _STAGE_COMMANDS:
        stage = commands.add_parser(name, help=help_text)
        add_config_options(stage, model, positional)
        stage.add_argument("--json", action="store_true", help=f"print the {printed} as JSON")
        stage.set_defaults(run=run)


def _add_pipeline_commands(commands: Subcommands) -> None:
    pipeline = commands.add_parser(
        "pipeline", help="ingest, train, infer and evaluate in one flow; skips unchanged stages"
    )
    pipeline.add_argument(
        "source", metavar="SRC", help="folder or URL (s3://...) with images/ and masks/"
    )
    pipeline.add_argument(
        "workdir", metavar="WORKDIR", help="where runs, checkpoints and records are written"
    )
    pipeline.add_argument(
        "--stores",
        metavar="FOLDER_OR_URL",
        help="where the dataset and prediction stores go, e.g. s3://bucket/segflow "
        "(default WORKDIR)",
    )
    pipeline.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="run ingest, inference and evaluation on this Dask scheduler (tcp://host:8786)",
    )
    pipeline.add_argument(
        "--config", type=Path, help="YAML or TOML file: sections ingest, train, infer, evaluate"
    )
    pipeline.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one setting, e.g. --set train.epochs=5 (repeatable)",
    )
    pipeline.add_argument("--json", action="store_true", help="print the summary as JSON")
    pipeline.set_defaults(run=_pipeline)

    demo = commands.add_parser("demo", help="run the pipeline on a generated dataset")
    demo.add_argument(
        "--workdir",
        type=Path,
        default=Path("work"),
        help="where data, stores and runs go (default ./work)",
    )
    demo.add_argument(
        "--large",
        type=int,
        default=4096,
        metavar="SIZE",
        help="side of the large tiled image in the demo data (default 4096)",
    )
    demo.set_defaults(run=_demo)


def _add_entry_point_commands(commands: Subcommands) -> None:
    """The subcommands of :data:`COMMANDS_GROUP`, in name order."""
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(commands)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand, those of :data:`COMMANDS_GROUP` included."""
    parser = OneLineParser(prog="segflow", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"segflow {version('segflow')}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (or SEGFLOW_DEBUG=1)")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    add_synth_command(commands)
    _add_stage_commands(commands)
    _add_pipeline_commands(commands)
    _add_entry_point_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segflow`` console script."""
    ns = build_parser().parse_args(argv)
    debug = ns.debug or os.environ.get("SEGFLOW_DEBUG") == "1"
    use_local_defaults()
    start_watchdog()  # before anything starts a process: after kill -9 none of them is left
    if not debug:
        quiet_reported_tracebacks()
    try:
        return ns.run(ns)
    except Exception as exc:
        reported = user_error(exc, ns.command)
        if reported is None:
            raise
        if debug:
            traceback.print_exc()
        status, line = reported
        print(f"error: {line}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
