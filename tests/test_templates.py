"""`bridge new-strategy` writes a plugin that loads and a test that passes; list-strategies shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge import cli
from bridge.config import StrategyConfig
from bridge.errors import ConfigError
from bridge.trading.plugins import load_strategy


def test_template_loads_and_its_test_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The generated plugin loads with validated params, and the generated test passes as written."""
    assert (
        cli.main(
            [
                "new-strategy",
                "my_play",
                "--dir",
                str(tmp_path / "strategies"),
                "--tests",
                str(tmp_path / "tests"),
            ]
        )
        == 0
    )
    plugin = tmp_path / "strategies/my_play.py"
    strategy = load_strategy(StrategyConfig("my_play", str(plugin), params={"cost": 7}))
    assert type(strategy).__name__ == "MyPlay" and strategy.params.cost == 7.0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            "tests/test_my_play.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_template_never_overwrites(tmp_path: Path) -> None:
    """Running new-strategy twice does not overwrite the author's work."""
    args = ["new-strategy", "again", "--dir", str(tmp_path / "s"), "--tests", str(tmp_path / "t")]
    assert cli.main(args) == 0
    (tmp_path / "s/again.py").write_text("# my edits\n")
    assert cli.main(args) == 78
    assert (tmp_path / "s/again.py").read_text() == "# my edits\n"


def test_bad_name_is_refused(tmp_path: Path) -> None:
    """A name that is not a valid module name is refused with a clear message."""
    from bridge.templates import new_strategy

    with pytest.raises(ConfigError, match="lowercase letters"):
        new_strategy("My-Play", tmp_path, tmp_path)


def test_list_strategies(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """list-strategies shows each configured strategy, its class, file and validated params."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert cli.main(["list-strategies", "-c", "config.yaml"]) == 0
    out = capsys.readouterr().out
    assert "listing_buy: ListingBuy from" in out and "strategies/listing_buy.py" in out
    assert "cost=20.0" in out
