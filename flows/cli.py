"""The ``segflow`` command: one subcommand per stage.

Options are generated from the flows' pydantic configs, so each setting (default, bounds,
description) is defined once, in :mod:`segflow.flows.config`.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError

from segflow.deployments.serve import add_arguments as add_serve_arguments
from segflow.deployments.serve import run as run_serve
from segflow.flows.config import EvaluateConfig, InferConfig, IngestConfig, TrainConfig
from segflow.flows.env import use_local_defaults


def _add_config_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], positional: Sequence[str]
) -> None:
    """One ``--option`` per config field (or a positional); pydantic keeps the defaults."""
    for name, field in model.model_fields.items():
        help_text = field.description or ""
        if name in positional:
            parser.add_argument(name, metavar=name.upper(), help=help_text)
            continue
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if not field.is_required():
            help_text += f" (default: {field.default})"
        if annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(annotation) in (tuple, list) or any(
            typing.get_origin(a) in (tuple, list) for a in args
        ):
            parser.add_argument(flag, dest=name, nargs="+", default=None, help=help_text)
        elif typing.get_origin(annotation) is typing.Literal:
            parser.add_argument(
                flag, dest=name, choices=typing.get_args(annotation), default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)


def _config(model: type[BaseModel], ns: argparse.Namespace) -> BaseModel:
    """Build the config from the options given; pydantic converts and validates the strings."""
    given = {k: v for k, v in vars(ns).items() if k in model.model_fields and v is not None}
    return model.model_validate(given)


def _synth(ns: argparse.Namespace) -> int:
    from segflow.tasks.demo.synth import write_dataset, write_large_pair

    pairs = write_dataset(
        ns.out_dir,
        count=ns.count,
        size=(ns.size, ns.size),
        channels=ns.channels,
        dtype=ns.dtype,
        fg_fraction=ns.fg_fraction,
        num_classes=ns.num_classes,
        seed=ns.seed,
        image_format=ns.format,
    )
    print(f"wrote {len(pairs)} image/mask pairs under {ns.out_dir}")
    if ns.large:
        image, mask = write_large_pair(
            ns.out_dir,
            size=ns.large,
            channels=ns.channels,
            dtype=ns.dtype,
            fg_fraction=ns.fg_fraction,
            seed=ns.seed,
        )
        print(f"wrote {ns.large}x{ns.large} tiled BigTIFF {image} and mask {mask}")
    return 0


def _print_ingest(summary, as_json: bool) -> None:
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    print(f"store      {summary.store}")
    print(
        f"samples    {summary.samples} ({summary.written} written, {summary.unchanged} unchanged)"
    )
    print("split      " + ", ".join(f"{k} {v}" for k, v in summary.split.items()))
    print(
        "classes    "
        + ", ".join(
            f"{n} {f:.2%}"
            for n, f in zip(summary.class_names, summary.class_fractions, strict=True)
        )
    )
    print(f"rejected   {len(summary.rejected)}")
    for item in summary.rejected:
        print(f"  {item['path']}: {item['reason']}")


def _ingest(ns: argparse.Namespace) -> int:
    config = _config(IngestConfig, ns)
    from segflow.flows.ingest import NothingIngested, ingest_dataset

    try:
        summary = ingest_dataset(config)
    except NothingIngested as exc:
        _print_ingest(exc.summary, ns.json)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_ingest(summary, ns.json)
    return 0


def _train(ns: argparse.Namespace) -> int:
    config = _config(TrainConfig, ns)
    from segflow.flows.train import train_unet

    summary = train_unet(config)
    _print_train(summary, config, ns.json)
    return 0


def _print_train(summary, config: TrainConfig, as_json: bool) -> None:
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    print(f"model      {summary.model_uri}")
    print(
        f"MLflow run {summary.run_id}  (mlflow ui --backend-store-uri "
        f"sqlite:///{Path(config.workdir).resolve() / 'mlflow.db'})"
    )
    print(f"val Dice   {summary.val_dice:.4f}")
    print(
        "class fractions uniform -> balanced: "
        f"{[round(f, 4) for f in summary.class_fractions_uniform]} -> "
        f"{[round(f, 4) for f in summary.class_fractions_balanced]}"
    )
    return 0


def _infer(ns: argparse.Namespace) -> int:
    config = _config(InferConfig, ns)
    from segflow.flows.infer import infer_images

    summary = infer_images(config)
    if ns.json:
        print(summary.model_dump_json(indent=2))
    else:
        print(f"predictions {summary.output}  ({summary.images} images, model {summary.model})")
        print(
            f"blocks      {summary.blocks_predicted} predicted, "
            f"{summary.blocks_already_done} already done"
        )
        for name, reason in summary.failed.items():
            print(f"  failed {name}: {reason}")
        for path, reason in summary.rejected:
            print(f"  unreadable {path}: {reason}")
        print(f"view        napari --plugin napari-ome-zarr {summary.output}/<image>")
    return 1 if summary.failed or (summary.images == 0) else 0


def _print_evaluation(summary, as_json: bool) -> None:
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    report = summary.report
    pooled = report["pooled"]
    print(f"evaluated  {report['images']} images of split {report['split']}")
    print(
        "pooled     "
        + ", ".join(f"{m} {pooled[m]:.4f}" for m in ("dice", "iou", "bce", "precision", "recall"))
    )
    for name, values in pooled["per_class"].items():
        print(f"  {name:<16} Dice {values['dice']:.4f}  IoU {values['iou']:.4f}")
    thresholds = report["threshold_sweep"]["thresholds"]
    for name, dice in report["threshold_sweep"]["dice"].items():
        best = max(range(len(dice)), key=dice.__getitem__)
        print(f"best threshold for {name}: {thresholds[best]:.2f} (Dice {dice[best]:.4f})")
    print(f"MLflow run {summary.run_id}")
    if summary.promotion is not None:
        verb = "promoted" if summary.promotion["promoted"] else "not promoted"
        print(f"champion   {verb}: {summary.promotion['reason']}")


def _evaluate(ns: argparse.Namespace) -> int:
    config = _config(EvaluateConfig, ns)
    from segflow.flows.evaluate import evaluate_predictions

    _print_evaluation(evaluate_predictions(config), ns.json)
    return 0


def _print_pipeline(summary, as_json: bool) -> None:
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    print("stage      status   seconds")
    for name, stage in summary.stages.items():
        print(f"{name:<10} {stage.status:<8} {stage.seconds:7.1f}")
    pooled = summary.stages["evaluate"].result["report"]["pooled"]
    print(f"\nmodel       {summary.model_uri}")
    print(f"predictions {summary.predictions}")
    print("evaluation  " + ", ".join(f"{m} {pooled[m]:.4f}" for m in ("dice", "iou", "bce")))
    workdir = Path(summary.workdir).resolve()
    print(f"\ndataset store: {summary.store}  (python: segflow.tasks.storage.dataset)")
    print(f"MLflow UI:     mlflow ui --backend-store-uri sqlite:///{workdir / 'mlflow.db'}")
    print(
        f"MLflow runs:   training {summary.stages['train'].result['run_id']}, evaluation "
        f"{summary.stages['evaluate'].result['run_id']} (nested under it)"
    )
    print(f"Prefect UI:    PREFECT_HOME={os.environ['PREFECT_HOME']} prefect server start")
    print(f"napari:        napari --plugin napari-ome-zarr {summary.predictions}/<image>")


def _pipeline(ns: argparse.Namespace) -> int:
    from segflow.flows.pipeline import load_pipeline_config, run_pipeline

    try:
        config = load_pipeline_config(ns.source, ns.workdir, ns.config, ns.overrides)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is reported by main()
        if isinstance(exc, ValidationError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_pipeline(run_pipeline(config), ns.json)
    return 0


# The demo's settings: a short training so the whole pipeline takes minutes on 2 CPU cores
# (`segflow train` defaults are sized for real data); every image predicted, so the large one
# can be viewed; the model promoted to `champion` when it beats the holder.
DEMO_SETTINGS = [
    "train.epochs=8",
    "train.patches_per_epoch=128",
    "train.patch_size=128",
    "train.base_channels=16",
    "train.val_max_tiles=32",
    "train.registered_model=segflow-demo",
    "infer.split=null",
    "evaluate.promote=true",
]


def _demo(ns: argparse.Namespace) -> int:
    from segflow.flows.pipeline import load_pipeline_config, run_pipeline
    from segflow.tasks.demo.synth import write_dataset, write_large_pair

    workdir = ns.workdir.resolve()
    source = workdir / "data"
    if not (source / "images").is_dir():
        print(f"generating a synthetic dataset under {source}")
        write_dataset(source, count=24, size=(256, 256), fg_fraction=0.05, seed=0)
        write_large_pair(source, size=ns.large, fg_fraction=0.05, seed=0)
    config = load_pipeline_config(str(source), str(workdir), overrides=DEMO_SETTINGS)
    _print_pipeline(run_pipeline(config), as_json=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="segflow", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="generate a synthetic image/mask dataset")
    synth.add_argument("out_dir", metavar="OUT_DIR", type=Path)
    synth.add_argument("--count", type=int, default=12, help="number of pairs (default 12)")
    synth.add_argument("--size", type=int, default=256, help="height and width (default 256)")
    synth.add_argument("--channels", type=int, default=1, choices=(1, 3, 4))
    synth.add_argument("--dtype", default="uint8", choices=("uint8", "uint16"))
    synth.add_argument(
        "--fg-fraction", type=float, default=0.08, help="target foreground fraction (default 0.08)"
    )
    synth.add_argument("--num-classes", type=int, default=2, help="classes incl. background")
    synth.add_argument("--format", default="png", choices=("png", "tif", "jpg"))
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--large",
        type=int,
        default=0,
        metavar="SIZE",
        help="also write one SIZE x SIZE tiled BigTIFF pair, tile by tile",
    )
    synth.set_defaults(run=_synth)

    ingest = commands.add_parser("ingest", help="ingest image/mask pairs into a Zarr store")
    _add_config_options(ingest, IngestConfig, positional=("source", "store"))
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.set_defaults(run=_ingest)

    train = commands.add_parser("train", help="balance classes and train a U-Net on a store")
    _add_config_options(train, TrainConfig, positional=("store",))
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.set_defaults(run=_train)

    infer = commands.add_parser("infer", help="tiled inference over images of any size")
    _add_config_options(infer, InferConfig, positional=("input", "output"))
    infer.add_argument("--json", action="store_true", help="print the summary as JSON")
    infer.set_defaults(run=_infer)

    evaluate = commands.add_parser(
        "evaluate", help="score predictions against a store's masks, log them to MLflow"
    )
    _add_config_options(evaluate, EvaluateConfig, positional=("predictions", "store"))
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.set_defaults(run=_evaluate)

    pipeline = commands.add_parser(
        "pipeline", help="ingest, train, infer and evaluate in one flow; skips unchanged stages"
    )
    pipeline.add_argument("source", metavar="SRC", help="folder with images/ and masks/")
    pipeline.add_argument("workdir", metavar="WORKDIR", help="where everything is written")
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

    serve = commands.add_parser(
        "serve", help="serve the flows as deployments to a Prefect server (PREFECT_API_URL)"
    )
    add_serve_arguments(serve)
    serve.set_defaults(run=run_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segflow`` console script."""
    ns = build_parser().parse_args(argv)
    use_local_defaults()
    try:
        return ns.run(ns)
    except ValidationError as exc:
        print(f"error: invalid {ns.command} options:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
