"""A YAML syntax error in config.yaml is reported in words, at the line that is wrong, with that line
quoted (tabs and indentation visible), exit 78 and no traceback (issue 13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import loads
from bridge.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "trading:\n  dry_run: true\n   max_event_age: 5\n",
            "line 3, column 17: not valid YAML: a `key: value`",
        ),
        ("trading:\n\tdry_run: true\n", r"line 2, column 1: not valid YAML: a character YAML cannot start"),
        (
            'feed:\n  key: "abc\ntrading: {}\n',
            "line 2: not valid YAML: a quote or bracket opened and never closed",
        ),
        ("strategies: [a, b\ntrading: {}\n", "a [ list ] that is not closed, or a missing comma"),
        ("trading: {dry_run: true\n", "line 1: not valid YAML: a { mapping } that is not closed"),
        ("trading: *defaults\n", "a *name that refers to no &name defined above it"),
        (
            "trading:\n  dry_run: true\n max_event_age: 5\n",
            "line 3, column 2: not valid YAML: this line's indentation",
        ),
    ],
)
def test_yaml_syntax_errors_are_explained_at_their_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loads(text, "config.yaml", env={})
    message = str(caught.value)
    assert message.startswith("config.yaml: ") and expected in message
    assert "(the line: " in message and "parser: " in message  # the line quoted, the parser's words kept


def test_a_tab_is_shown_in_the_quoted_line() -> None:
    with pytest.raises(ConfigError, match=r"the line: '\\tdry_run: true'"):
        loads("trading:\n\tdry_run: true\n", "config.yaml", env={})


def test_check_config_prints_one_line_and_exits_78(tmp_path: Path) -> None:
    """From the command line: one line on stderr naming file and line, exit 78, no traceback."""
    path = tmp_path / "config.yaml"
    path.write_text("trading:\n  dry_run: true\n   max_event_age: 5\n")
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "-c", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 78
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{path}: line 3, column 17: not valid YAML" in lines[0]
