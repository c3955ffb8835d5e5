"""Config loading cannot hang or exhaust memory, and a plugin that exits at import is a config error:
a FIFO or /dev/zero as the config or a secret file, a huge file, a YAML alias bomb, sys.exit() in a
plugin — each one line, exit 78, within a second."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bridge import config
from bridge.config import StrategyConfig
from bridge.config_io import MAX_CONFIG_BYTES
from bridge.errors import ConfigError, ExitCode
from bridge.trading.plugins import load_strategy


def refused(path: Path | str) -> str:
    began = time.monotonic()
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert time.monotonic() - began < 1.0
    assert err.value.exit_code == ExitCode.CONFIG and "\n" not in str(err.value)
    return str(err.value)


def test_a_fifo_as_config_is_refused_without_blocking(tmp_path: Path) -> None:
    """A named pipe nobody writes to would block a plain read forever: refused at once."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo)


def test_dev_zero_and_a_directory_are_refused() -> None:
    """/dev/zero (endless) and a directory are not config files."""
    assert "not a regular file" in refused("/dev/zero")
    assert "not a regular file" in refused("/tmp")


def test_a_huge_config_file_is_refused(tmp_path: Path) -> None:
    """A file over the size limit is refused by its size, without being read."""
    big = tmp_path / "config.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)
    assert "over the" in refused(big)


def test_secret_files_are_bounded_too(tmp_path: Path) -> None:
    """`${file:...}` naming /dev/zero or a FIFO is an error naming the key, not a hang."""
    fifo = tmp_path / "key"
    os.mkfifo(fifo)
    for target in ("/dev/zero", str(fifo)):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f'feed: {{api_key: "${{file:{target}}}"}}\n')
        message = refused(cfg)
        assert "feed.api_key: cannot read secret file" in message and "not a regular file" in message


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    """A billion-laughs document (aliases of aliases) is refused by its expanded size, quickly."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        lines.append(
            f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]"
        )
    lines.append("feed: {api_key: k}")
    bomb = tmp_path / "config.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert "alias bomb" in refused(bomb)


@pytest.mark.parametrize("statement", ["import sys; sys.exit(3)", "raise KeyboardInterrupt", "exit()"])
def test_a_plugin_that_exits_at_import_is_a_config_error(tmp_path: Path, statement: str) -> None:
    """sys.exit(), exit() or KeyboardInterrupt in a plugin's module body does not stop bridge: it is a
    config error naming the plugin."""
    plugin = tmp_path / "quitter.py"
    plugin.write_text(statement + "\n")
    with pytest.raises(ConfigError) as err:
        load_strategy(StrategyConfig(name="q", module=str(plugin)), "config.yaml")
    assert "strategies[q].module: cannot import" in str(err.value)
