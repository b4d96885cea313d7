"""Command-line options generated from a flow's pydantic config, and the config built back from
the parsed options: each setting's default, bounds and description stay in the config alone."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Sequence

from pydantic import BaseModel


def add_config_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], positional: Sequence[str] = ()
) -> None:
    """Add one argument to `parser` per field of `model`: a positional for the names in
    `positional`, else ``--field-name`` (``--flag/--no-flag`` for booleans, several values for
    tuples and lists, choices for literals). Options default to None, so an option not given
    leaves the config's own default in place; its help shows that default."""
    for name, field in model.model_fields.items():
        help_text = field.description or ""
        if name in positional:
            parser.add_argument(name, metavar=name.upper(), help=help_text)
            continue
        if not field.is_required():
            help_text += f" (default: {field.default})"
        annotation = field.annotation
        # the field itself or, when Optional, its non-None type
        origins = {typing.get_origin(a) for a in (annotation, *typing.get_args(annotation))}
        if annotation is bool:
            kind: dict[str, typing.Any] = {"action": argparse.BooleanOptionalAction}
        elif origins & {tuple, list}:
            kind = {"nargs": "+"}
        elif typing.get_origin(annotation) is typing.Literal:
            kind = {"choices": typing.get_args(annotation)}
        else:
            kind = {}
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, default=None, help=help_text, **kind)


def config_from_options(model: type[BaseModel], ns: argparse.Namespace) -> BaseModel:
    """The `model` built from the options given in `ns`; pydantic converts the strings.

    Raises
    ------
    pydantic.ValidationError
        A value out of bounds, of the wrong type, or a bad combination of values.
    """
    given = {k: v for k, v in vars(ns).items() if k in model.model_fields and v is not None}
    return model.model_validate(given)
