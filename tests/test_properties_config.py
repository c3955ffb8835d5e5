"""Property tests for the config loader: any YAML document is a Config or one ConfigError line naming
the file (and, for a value in a valid document, the exact key), within a time bound; and every number
in the schema, whatever section it is in, follows the one rule (finite, positive, 0 only where it
means off or any port, ports 0-65535)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import typing
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import config, config_feed
from bridge.config import ZERO_ALLOWED, Config
from bridge.errors import ConfigError, ExitCode

BASE: dict[str, Any] = {
    "feed": {"api_key": "k", "reconnect": {"min_delay": 5, "max_delay": 300}},
    "exchanges": {"binance": {"markets_refresh": 600, "ccxt": {"options": {"x": 1}}}},
    "trading": {"max_order_cost": {"USDT": 100}, "daily_max_cost": 500, "paper_balance": {"USDT": 10}},
    "strategies": [{"name": "s", "module": "m", "params": {"cost": 1}}],
    "alerts": {
        "webhook": {"url": "http://127.0.0.1/x"},
        "telegram": {"bot_token": "t", "chat_id": "1"},
        "events": {"started": True},
    },
    "health": {"port": 8780},
}
SECTIONS = {  # the YAML path of each section in BASE, and its dataclass
    "feed": config_feed.FeedConfig,
    "feed.reconnect": config_feed.ReconnectConfig,
    "exchanges.binance": config.ExchangeConfig,
    "trading": config.TradingConfig,
    "strategies[0]": config.StrategyConfig,
    "alerts": config.AlertsConfig,
    "alerts.webhook": config.WebhookConfig,
    "alerts.telegram": config.TelegramConfig,
    "health": config.HealthConfig,
}


def _numeric_keys() -> list[str]:
    """Every key in the schema that holds a number (alone, optional, or a per-quote limit)."""
    keys = []
    for path, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            args = set(typing.get_args(hints[f.name])) | {hints[f.name]}
            if args & {int, float}:
                keys.append(f"{path}.{f.name}")
    return keys


NUMERIC_KEYS = _numeric_keys()


def _set(data: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    data = copy.deepcopy(data)
    node: Any = data
    parts = path.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value
    return data


def _load(data: dict[str, Any]) -> tuple[Config | None, str | None]:
    """A Config, or the ConfigError's message; asserted one line, exit 78, naming the file, < 1 s."""
    text = yaml.safe_dump(data, allow_unicode=True)
    began = time.monotonic()
    try:
        return config.loads(text, "config.yaml", env={}), None
    except ConfigError as exc:
        message = str(exc)
        assert exc.exit_code == ExitCode.CONFIG
        assert message.startswith("config.yaml: ") and "\n" not in message, message
        return None, message
    finally:
        assert time.monotonic() - began < 1.0


def test_the_base_document_is_valid() -> None:
    """The documents below differ from a valid one in one value only."""
    cfg, error = _load(BASE)
    assert cfg is not None, error
    assert len(NUMERIC_KEYS) >= 25  # the sweep below really covers the schema


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_every_number_follows_the_one_rule(key: str) -> None:
    """For every numeric key of every section: NaN, +-inf, a negative value, an integer past 2**63 and
    (unless 0 means off / any port) zero are config errors naming exactly that key; 0 where allowed loads."""
    name = key.rsplit(".", 1)[1]
    bad: list[object] = [math.nan, math.inf, -math.inf, -1, 2**70]
    if name not in ZERO_ALLOWED:
        bad.append(0)
    for value in bad:
        cfg, error = _load(_set(BASE, key, value))
        assert error is not None and error.startswith(f"config.yaml: {key}: "), (value, error)
    if name in ZERO_ALLOWED:
        cfg, error = _load(_set(BASE, key, 0))
        assert cfg is not None, error
    if name == "port":
        _, error = _load(_set(BASE, key, 65536))
        assert error is not None and error.startswith(f"config.yaml: {key}: a port is 0-65535")


_hostile = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=12)
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
)
_LEAVES = [
    *NUMERIC_KEYS,
    "feed.url",
    "feed.cex",
    "trading.dry_run",
    "log.level",
    "state_dir",
    "trading.max_order_cost.USDT",
    "trading.paper_balance.USDT",
    "alerts.events.started",
    "exchanges.binance.ccxt",
    "strategies[0].params",
    "strategies[0].name",
]


# The rules between two keys name the key the user must change in the other place.
CROSS_FIELD = {
    "feed.reconnect.min_delay": "feed.reconnect.max_delay",  # max_delay must be at least min_delay
    "trading.dry_run": "exchanges.binance.api_key",  # live trading needs each exchange's keys
}


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(_LEAVES), _hostile)
def test_one_hostile_value_is_named_by_its_key(key: str, value: object) -> None:
    """Any value at any key of a valid document: it loads, or the one error line names that key (or
    a key inside it); a rule between two keys names the other one (CROSS_FIELD)."""
    _, error = _load(_set(BASE, key, value))
    if error is None:
        return
    named = error.removeprefix("config.yaml: ")
    assert named.startswith((key, CROSS_FIELD.get(key, key))), (key, value, error)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.text(alphabet="[]{}:,-&*!|>'\"\n #?ab1.", max_size=200),
        st.dictionaries(
            st.sampled_from(["feed", "trading", "exchanges", "strategies", "health", "alerts", "log", "zz"]),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                lambda inner: (
                    st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
                ),
                max_leaves=10,
            ),
            max_size=5,
        ).map(yaml.safe_dump),
    )
)
def test_any_yaml_document_loads_or_is_one_error_line(text: str) -> None:
    """Any document at all (YAML syntax soup included): a Config, or one exit-78 line naming the file,
    within a second; nothing else escapes."""
    began = time.monotonic()
    try:
        config.loads(text, "config.yaml", env={})
    except ConfigError as exc:
        assert str(exc).startswith("config.yaml") and "\n" not in str(exc)
        assert exc.exit_code == ExitCode.CONFIG
    assert time.monotonic() - began < 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: " + "[" * 2000 + "]" * 2000, "not valid YAML"),  # libyaml's own nesting bound
        ("x: " + "[" * 40 + "]" * 40, "config.yaml: x" + "[0]" * 32 + ": nested deeper than 32"),
        ("x: " + "9" * 5000, "a number with too many digits"),
        ("trading: {max_event_age: " + "9" * 100 + "}", "trading.max_event_age: out of range"),
    ],
)
def test_pathological_documents_are_refused_quickly(text: str, message: str) -> None:
    """Deep nesting and monster integers: one line naming the file (and the key where there is one),
    not a RecursionError, an OverflowError or Python's integer-digits ValueError."""
    began = time.monotonic()
    with pytest.raises(ConfigError) as err:
        config.loads("feed: {api_key: k}\n" + text, "config.yaml", env={})
    assert message in str(err.value), str(err.value)
    assert time.monotonic() - began < 1.0
