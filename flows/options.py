"""Command-line options generated from a flow's pydantic config, and the config built back from
the parsed options: each setting's default, bounds and description stay in the config alone."""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Sequence

from pydantic import BaseModel


class OneLineParser(argparse.ArgumentParser):
    """An argument parser that takes no abbreviation (`--epoch 1` is not `--epochs 1`) and
    reports a mistake in one line, ``error: <what> (see <command> --help)``, exit status 2."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


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
        # A None default whose description already says what None does would read "(default:
        # one per core). (default: None)": state the default once.
        if not field.is_required() and not (
            field.default is None and "default" in help_text.lower()
        ):
            help_text += f" (default: {field.default})"
        annotation = field.annotation
        # the field itself or, when Optional, its non-None type
        kinds = {typing.get_origin(a): a for a in (annotation, *typing.get_args(annotation))}
        if annotation is bool:
            kind: dict[str, typing.Any] = {"action": argparse.BooleanOptionalAction}
        elif kinds.keys() & {tuple, list}:
            kind = {"nargs": "+"}
        elif typing.Literal in kinds:
            kind = {"choices": typing.get_args(kinds[typing.Literal])}
        elif dict in kinds:
            kind = {"type": json.loads, "metavar": "JSON"}
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
