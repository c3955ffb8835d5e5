"""Strategy loading: import path or .py file, class selection, params validated as config."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import StrategyConfig
from bridge.errors import ConfigError
from bridge.trading.plugins import load_strategy

PLUGIN = """
from dataclasses import dataclass
from bridge import Strategy

@dataclass(frozen=True)
class P:
    cost: float = 10.0
    quote: str = "USDT"

class One(Strategy):
    Params = P
    async def on_announcement(self, announcement, ctx):
        pass

class Two(Strategy):
    async def on_announcement(self, announcement, ctx):
        pass
"""


def test_import_path_with_validated_params() -> None:
    """module: an import path; params fill the strategy's Params dataclass with defaults."""
    s = load_strategy(
        StrategyConfig("lb", "strategies.listing_buy", params={"cost": 5, "publishers": ["upbit"]})
    )
    assert s.name == "lb"
    assert s.params.cost == 5.0 and s.params.publishers == ("upbit",) and s.params.quote == "USDT"


def test_file_path_and_class(tmp_path: Path) -> None:
    """module: a path to a .py file; class: picks one of several strategies in it."""
    path = tmp_path / "mine.py"
    path.write_text(PLUGIN)
    s = load_strategy(StrategyConfig("mine", str(path), class_="One", params={"cost": 3}))
    assert type(s).__name__ == "One" and s.params.cost == 3.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            StrategyConfig("lb", "strategies.listing_buy", params={"cots": 5}),
            "config.yaml: strategies[lb].params.cots: unknown key",
        ),
        (
            StrategyConfig("lb", "strategies.listing_buy", params={"cost": "lots"}),
            'config.yaml: strategies[lb].params.cost: expected a number, got "lots"',
        ),
        (
            StrategyConfig("lb", "strategies.listing_buy", params={"cost": -1}),
            "config.yaml: strategies[lb].params: cost must be positive",
        ),
        (StrategyConfig("x", "strategies.nope"), "strategies[x].module: cannot import strategies.nope"),
        (StrategyConfig("x", "/no/such/file.py"), "strategies[x].module: no such file"),
        (StrategyConfig("x", "strategies.listing_buy", class_="Nope"), "has no Strategy subclass Nope"),
    ],
)
def test_plugin_mistakes_are_config_errors(spec: StrategyConfig, message: str) -> None:
    """A wrong param, module or class is a ConfigError naming the strategy and the key (exit 78)."""
    with pytest.raises(ConfigError) as err:
        load_strategy(spec, "config.yaml")
    assert message in str(err.value)


def test_ambiguous_module_needs_class(tmp_path: Path) -> None:
    """A module with several strategies and no class: is an error listing them."""
    path = tmp_path / "several.py"
    path.write_text(PLUGIN)
    with pytest.raises(ConfigError, match="found: One, Two"):
        load_strategy(StrategyConfig("s", str(path)))


def test_plugin_raising_at_import_is_config_error(tmp_path: Path) -> None:
    """A plugin that raises while importing is reported as a config error, not a traceback."""
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('oops')\n")
    with pytest.raises(ConfigError, match=r"cannot import .*RuntimeError: oops"):
        load_strategy(StrategyConfig("s", str(path)))


PARAMS_THAT_RAISE = """
from dataclasses import dataclass
from bridge import Strategy

@dataclass(frozen=True)
class P:
    limit: float = 1.0

    def __post_init__(self):
        if self.limit > 5:
            raise {exc}

class S(Strategy):
    Params = P
    async def on_announcement(self, announcement, ctx):
        pass
"""


@pytest.mark.parametrize("exc", ["TypeError('bad\\nlimit')", "SystemExit(2)", "KeyboardInterrupt()"])
def test_params_that_raise_anything_are_one_line_config_errors(tmp_path: Path, exc: str) -> None:
    """A Params dataclass whose own check raises anything (even SystemExit or KeyboardInterrupt, even a
    message with a newline) is a config error naming the strategy and `params`, on one line."""
    plugin = tmp_path / "raiser.py"
    plugin.write_text(PARAMS_THAT_RAISE.replace("{exc}", exc))
    with pytest.raises(ConfigError) as err:
        load_strategy(StrategyConfig("r", str(plugin), params={"limit": 9}), "config.yaml")
    message = str(err.value)
    assert (
        message.startswith("config.yaml: strategies[r].params: S.Params rejected them")
        and "\n" not in message
    )


def test_a_wrong_param_names_the_innermost_key(tmp_path: Path) -> None:
    """A wrong value deep in params names its full path: strategies[x].params.y."""
    with pytest.raises(ConfigError) as err:
        load_strategy(StrategyConfig("lb", "strategies.listing_buy", params={"cost": "lots"}), "config.yaml")
    assert str(err.value).startswith("config.yaml: strategies[lb].params.cost: expected a number")
