"""The README's command summary (the ```bash block under "## Commands") agrees with `--help`.

In that block `--option value` states the default when `value` is lower case or a number,
`--option a|b` lists choices, and an UPPER-CASE value (or `...`) is a placeholder.
"""

import argparse
import re
from pathlib import Path

import pytest

from segflow.flows.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
_HELP_DEFAULT = re.compile(r"\(default:? ([^()]*)\)\s*$")


def summary_block(text: str) -> dict[str, list[str]]:
    """Subcommand -> the words after `segflow <subcommand>` in the README's summary block."""
    commands = text.split("\n## Commands\n", 1)[1]
    block = commands.split("```bash\n", 1)[1].split("```", 1)[0]
    words: dict[str, list[str]] = {}
    for line in block.splitlines():
        tokens = line.replace("[", " ").replace("]", " ").split()
        if tokens[:1] == ["segflow"]:
            current = words.setdefault(tokens[1], [])
            tokens = tokens[2:]
        current.extend(tokens)
    return words


def stated_options(words: list[str]) -> list[tuple[str, str | None]]:
    """(option, the value written after it or None) for every `--option` in `words`."""
    pairs = []
    for i, word in enumerate(words):
        if word.startswith("--"):
            after = words[i + 1] if i + 1 < len(words) else None
            pairs.append((word, None if after is None or after.startswith("--") else after))
    return pairs


def subparsers() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def help_default(action: argparse.Action) -> str | None:
    """The default `--help` shows for `action`: its own, or the config's from the help text."""
    if action.default not in (None, argparse.SUPPRESS):
        return str(action.default)
    found = _HELP_DEFAULT.search(" ".join((action.help or "").split()))
    return found[1] if found else None


def test_the_summary_block_is_read():
    words = summary_block(README.read_text())
    assert {"synth", "ingest", "train", "infer", "evaluate", "pipeline", "demo"} <= set(words)
    assert ("--tile", "1024") in stated_options(words["infer"])


@pytest.mark.parametrize("command", sorted(summary_block(README.read_text())))
def test_readme_options_and_defaults_match_help(command):
    parser = subparsers()[command]
    actions = {flag: a for a in parser._actions for flag in a.option_strings}
    for option, value in stated_options(summary_block(README.read_text())[command]):
        assert option in actions, f"README: segflow {command} {option}: no such option"
        action = actions[option]
        if value is None or value == "..." or value.isupper():
            continue
        if "|" in value:
            choices = {str(choice) for choice in action.choices or ()}
            assert set(value.split("|")) <= choices, (command, option, value)
            continue
        shown = help_default(action)
        assert shown == value, f"README: segflow {command} {option} {value}; --help: {shown}"
