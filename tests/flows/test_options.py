"""Command-line options generated from a pydantic config, and the config built back."""

import argparse
from typing import Literal

import pytest
from pydantic import Field, ValidationError

from segflow.flows.config import TrainConfig
from segflow.flows.config.base import Frozen
from segflow.flows.options import add_config_options, config_from_options


class Example(Frozen):
    source: str = Field(..., description="Where from.")
    epochs: int = Field(3, ge=1, description="How long.")
    elastic: bool = Field(True, description="Warp.")
    names: tuple[str, ...] | None = Field(None, description="Class names.")
    mode: Literal["fast", "slow"] = Field("fast", description="Speed.")


def parse(*args: str) -> Example:
    parser = argparse.ArgumentParser()
    add_config_options(parser, Example, positional=("source",))
    return config_from_options(Example, parser.parse_args(args))


def test_options_not_given_keep_the_config_defaults():
    assert parse("src") == Example(source="src")
    parser = argparse.ArgumentParser()
    add_config_options(parser, TrainConfig, positional=("store",))
    assert config_from_options(TrainConfig, parser.parse_args(["s"])) == TrainConfig(store="s")


def test_each_kind_of_field_parses():
    got = parse("src", "--epochs", "5", "--no-elastic", "--names", "a", "b", "--mode", "slow")
    assert got == Example(source="src", epochs=5, elastic=False, names=("a", "b"), mode="slow")


def test_help_shows_descriptions_and_defaults():
    parser = argparse.ArgumentParser()
    add_config_options(parser, Example, positional=("source",))
    text = parser.format_help()
    assert "SOURCE" in text and "Where from." in text
    assert "How long. (default: 3)" in text


def test_bad_values_fail_in_the_parser_or_in_pydantic():
    with pytest.raises(SystemExit):
        parse("src", "--mode", "medium")  # a literal: argparse checks the choices
    with pytest.raises(ValidationError, match="epochs"):
        parse("src", "--epochs", "0")


def test_every_stage_option_states_its_default_once():
    from segflow.flows.config import EvaluateConfig, InferConfig, IngestConfig

    for model in (IngestConfig, TrainConfig, InferConfig, EvaluateConfig):
        parser = argparse.ArgumentParser()
        add_config_options(parser, model)
        for action in parser._actions:
            assert (action.help or "").lower().count("default:") <= 1, action.help


def test_optional_literals_get_their_choices():
    from segflow.flows.config import InferConfig

    parser = argparse.ArgumentParser()
    add_config_options(parser, InferConfig, positional=("input", "output"))
    assert parser.parse_args(["in", "out", "--split", "val"]).split == "val"
    with pytest.raises(SystemExit):
        parser.parse_args(["in", "out", "--split", "all"])  # `split: Literal[...] | None`
