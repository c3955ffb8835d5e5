"""`--help`, the README's Commands table and config.yaml stay in step: every verb is listed with a line
and documented, every option explains itself, and the example config holds only keys bridge knows."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from bridge import cli
from bridge.config import Config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def verbs() -> dict[str, argparse.ArgumentParser]:
    return dict(_subcommands(cli._parser()))


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.extend(action.choices.items())
    return found


def _walk(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    """Every option and positional of `parser` and of its sub-commands, with the command path."""
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"`bridge {path} {name}` has no help line".replace("  ", " ")
                found.extend(_walk(sub, f"{path} {name}".strip()))
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


def commands_table() -> dict[str, str]:
    """The README's Commands table: verb -> its usage cell."""
    section = README.split("### Commands", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    return {row.split()[0]: row for row in rows}


def test_bridge_help_lists_every_verb_with_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`bridge --help` names every verb, each with its one-line help."""
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in verbs():
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", out, flags=re.MULTILINE), f"{name} not in --help"


def test_every_option_of_every_verb_has_help_text() -> None:
    """Walking the whole argparse tree (sub-sub-commands included): no option or argument without help."""
    missing = [
        f"bridge {path}: {'/'.join(action.option_strings) or action.dest}"
        for path, action in _walk(cli._parser(), "")
        if not (action.help or "").strip()
    ]
    assert missing == []
    assert len(_walk(cli._parser(), "")) > 50  # the walk saw the tree, not an empty parser


def test_every_verb_is_in_the_readme_commands_table() -> None:
    """Each CLI verb has a row in README's Commands table, and each row names a real verb."""
    table = commands_table()
    assert sorted(verbs()) == sorted(table)


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_the_readme_row_names_only_options_the_verb_has(verb: str) -> None:
    """A README row's options (`-c`, `--speed` ...) all exist in that verb's parser: no stale option."""
    row = commands_table()[verb]
    parser = verbs()[verb]
    known = {s for action in parser._actions for s in action.option_strings}
    for _, sub in _subcommands(parser):  # emulator-send's actions have options of their own
        known |= {s for action in sub._actions for s in action.option_strings}
    named = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", row))
    assert named <= known, f"README's `{verb}` row names {sorted(named - known)}"


def test_config_yaml_holds_only_known_top_level_keys_and_mentions_every_one() -> None:
    """The example config.yaml: every top-level key is a Config field (no stale section), and every
    Config field is in it, as a key or as a commented-out one (documented where users look)."""
    text = (ROOT / "config.yaml").read_text()
    fields = {f.name for f in dataclasses.fields(Config) if f.init}
    keys = set(yaml.safe_load(text))
    assert keys <= fields
    mentioned = set(re.findall(r"^#? ?([a-z_]+):", text, flags=re.MULTILINE))
    assert fields <= mentioned, f"config.yaml does not mention {sorted(fields - mentioned)}"


def test_check_config_accepts_config_yaml(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check-config -c config.yaml` (its feed key set, as a user would): exit 0, the PAPER line."""
    monkeypatch.setenv("CRYPTOLISTING_API_KEY", "dsk_" + "a" * 64)
    monkeypatch.chdir(ROOT)
    assert cli.main(["check-config", "-c", "config.yaml"]) == 0
    assert capsys.readouterr().out.startswith("PAPER (dry_run: true, no real orders): config.yaml: OK")
