"""Config loading: every mistake is one line naming file and key, exit 78; secrets never shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge import cli, config
from bridge.errors import ConfigError, ExitCode
from bridge.schema import SchemaError, build

GOOD = """
feed:
  url: ws://127.0.0.1:9999
  api_key: ${KEY}
  cex: [binance, upbit]
exchanges:
  binance:
    api_key: ${BKEY}
    secret: ${file:SECRET_PATH}
    ccxt: {options: {apiKey2: hidden-value-123}}
strategies:
  - {name: log, module: strategies.log_only}
"""


def load(text: str, tmp_path: Path, **env: str) -> config.Config:
    secret = tmp_path / "secret.txt"
    secret.write_text("binance-secret-value\n")
    return config.loads(text.replace("SECRET_PATH", str(secret)), "config.yaml", env=env)


def test_valid_config_loads_with_defaults_and_substitutions(tmp_path: Path) -> None:
    """${VAR} comes from the environment, ${file:...} from a file (stripped), defaults fill the rest."""
    cfg = load(GOOD, tmp_path, KEY="dsk_feedkey123", BKEY="binance-key-123")
    assert cfg.feed.api_key.reveal() == "dsk_feedkey123"
    assert cfg.feed.cex == ("binance", "upbit")
    assert cfg.feed.heartbeat_timeout == 35.0
    assert cfg.feed.reconnect.min_delay == 5.0
    ex = cfg.exchanges["binance"]
    assert ex.secret is not None and ex.secret.reveal() == "binance-secret-value"
    assert cfg.trading.dry_run is True
    assert cfg.strategies[0].module == "strategies.log_only"
    assert cfg.source == "config.yaml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "feed: {api_key: k, heartbeat_timeout: abc}",
            'config.yaml: feed.heartbeat_timeout: expected a number, got "abc"',
        ),
        ("feed: {api_key: k}\nfeeed: {}", "config.yaml: feeed: unknown key"),
        ("feed: {api_key: k, reconect: {}}", "config.yaml: feed.reconect: unknown key"),
        (
            "feed:\n  api_key: ${MISSING}",
            "config.yaml: feed.api_key: environment variable MISSING is not set",
        ),
        ("feed: {api_key: k, url: ws://example.com}", "config.yaml: feed.url: ws:// (unencrypted)"),
        ("feed: {api_key: k, url: http://x}", "config.yaml: feed.url: expected a wss:// URL"),
        (
            "feed: {api_key: k}\ntrading: {dry_run: yes please}",
            "config.yaml: trading.dry_run: expected true or false",
        ),
        (
            "feed: {api_key: k}\nlog: {format: xml}",
            "config.yaml: log.format: expected one of auto, json, console",
        ),
        ("{}", "config.yaml: feed: required key is missing"),
        ("feed: {api_key: ${K}}", 'inside { } a ${VAR} must be quoted: "${VAR}"'),
        ("- a list", "config.yaml: expected a mapping of settings at the top level"),
        (
            "feed: {api_key: k}\nstrategies: [{name: a, module: m}, {name: a, module: m}]",
            'config.yaml: strategies[1].name: duplicate strategy name "a"',
        ),
        (
            "feed: {api_key: k}\ntrading: {dry_run: false}\nexchanges: {binance: {}}",
            "config.yaml: exchanges.binance.api_key: live trading (dry_run: false) needs it",
        ),
        ("feed:\n  api_key: ${file:/nonexistent/key}", "config.yaml: feed.api_key: cannot read secret file"),
        ("feed:\n  api_key: ${credential:feed}", "needs $CREDENTIALS_DIRECTORY"),
    ],
)
def test_mistakes_are_one_line_naming_file_and_key(text: str, message: str) -> None:
    """Each kind of mistake produces a single-line ConfigError (exit 78) that says where and what."""
    with pytest.raises(ConfigError) as err:
        config.loads(text, "config.yaml", env={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == ExitCode.CONFIG


def test_credentials_directory_is_read(tmp_path: Path) -> None:
    """${credential:NAME} reads $CREDENTIALS_DIRECTORY/NAME, as systemd's LoadCredential= provides."""
    (tmp_path / "feed").write_text("dsk_from_credentials")
    cfg = config.loads("feed:\n  api_key: ${credential:feed}", env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.feed.api_key.reveal() == "dsk_from_credentials"


def test_secrets_never_printed(tmp_path: Path) -> None:
    """repr, str and the redacted view of a config never contain a secret value."""
    cfg = load(GOOD, tmp_path, KEY="dsk_feedkey123", BKEY="binance-key-123")
    shown = repr(cfg) + str(cfg) + repr(config.redacted(cfg))
    for secret in ("dsk_feedkey123", "binance-key-123", "binance-secret-value", "hidden-value-123"):
        assert secret not in shown
    assert config.redacted(cfg)["exchanges"]["binance"]["ccxt"]["options"]["apiKey2"] == "***"


def test_cli_config_error_exit_78_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bridge check-config` on a broken file prints one line on stderr and exits 78."""
    path = tmp_path / "config.yaml"
    path.write_text("feed: {api_key: k, heartbeat_timeout: abc}\n")
    assert cli.main(["check-config", "-c", str(path)]) == 78
    err = capsys.readouterr().err
    assert err.strip() == f'bridge: {path}: feed.heartbeat_timeout: expected a number, got "abc"'


def test_cli_unreadable_file_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing config file is a config error naming the file, not a traceback."""
    assert cli.main(["run", "-c", str(tmp_path / "nope.yaml")]) == 78
    assert "cannot read config file" in capsys.readouterr().err


def test_show_config_redacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bridge show-config` prints the effective config with every secret as ***."""
    monkeypatch.setenv("KEY", "dsk_showconfig_key")
    monkeypatch.setenv("BKEY", "binance-showconfig-key")
    secret = tmp_path / "secret.txt"
    secret.write_text("binance-showconfig-secret")
    path = tmp_path / "config.yaml"
    path.write_text(GOOD.replace("SECRET_PATH", str(secret)))
    assert cli.main(["show-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "api_key: '***'" in out
    for secret_value in ("dsk_showconfig_key", "binance-showconfig-key", "binance-showconfig-secret"):
        assert secret_value not in out


def test_example_config_is_valid() -> None:
    """The shipped config.yaml loads (with its variables set) and its strategies import."""
    from bridge.trading.plugins import load_strategies

    env = {"CRYPTOLISTING_API_KEY": "dsk_x", "BINANCE_API_KEY": "key12345", "BINANCE_SECRET": "secret12345"}
    cfg = config.loads(Path("config.yaml").read_text(), "config.yaml", env=env)
    assert [s.name for s in load_strategies(cfg)] == ["listing_buy", "log_only"]


@pytest.mark.parametrize(
    ("trading", "exchanges", "order_cost", "daily", "upbit_daily"),
    [
        ("{}", "{}", 100.0, None, None),
        ("{max_order_cost: 50, daily_max_cost: 500}", "{}", 50.0, 500.0, None),
        (
            "{max_order_cost: {USDT: 100, KRW: 150000}, daily_max_cost: {USDT: 500, KRW: 1000000}}",
            "{upbit: {daily_max_cost: {KRW: 300000}}}",
            {"USDT": 100.0, "KRW": 150000.0},
            {"USDT": 500.0, "KRW": 1e6},
            {"KRW": 300000.0},
        ),
        ("{max_order_cost: {USDT: 20.5}}", "{upbit: {daily_max_cost: 200}}", {"USDT": 20.5}, None, 200.0),
    ],
)
def test_money_limits_per_quote_currency(
    trading: str, exchanges: str, order_cost: object, daily: object, upbit_daily: object
) -> None:
    """max_order_cost and daily_max_cost (trading-wide and per exchange) take a number (USD
    stablecoins) or a mapping per quote currency; numbers become floats."""
    text = f"feed: {{api_key: k}}\ntrading: {trading}\nexchanges: {exchanges}"
    cfg = config.loads(text, "config.yaml", env={})
    assert cfg.trading.max_order_cost == order_cost
    assert cfg.trading.daily_max_cost == daily
    assert (cfg.exchanges["upbit"].daily_max_cost if "upbit" in cfg.exchanges else None) == upbit_daily
    assert config.quote_limits(cfg.trading.max_order_cost).get("KRW") == (
        order_cost.get("KRW") if isinstance(order_cost, dict) else None
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "trading: {max_order_cost: {usdt: 100}}",
            "config.yaml: trading.max_order_cost.usdt: quotes are upper case, as ccxt spells them (write USDT)",
        ),
        (
            "trading: {daily_max_cost: {USDT: 500, Krw: 1000}}",
            "config.yaml: trading.daily_max_cost.Krw: quotes are upper case",
        ),
        (
            "exchanges: {upbit: {daily_max_cost: {krw: 1000000}}}",
            "config.yaml: exchanges.upbit.daily_max_cost.krw: quotes are upper case",
        ),
        (
            "trading: {max_order_cost: {USDT: abc}}",
            'config.yaml: trading.max_order_cost.USDT: expected a number, got "abc"',
        ),
        (
            "trading: {max_order_cost: abc}",
            'config.yaml: trading.max_order_cost: expected a number or a mapping, got "abc"',
        ),
        (
            "trading: {daily_max_cost: [500]}",
            "config.yaml: trading.daily_max_cost: expected a number or a mapping",
        ),
        ("trading: {max_order_cost: 0}", "config.yaml: trading.max_order_cost: must be positive"),
        ("trading: {max_order_cost: {KRW: -1}}", "config.yaml: trading.max_order_cost.KRW: must be positive"),
        ("trading: {max_order_cost: {}}", "config.yaml: trading.max_order_cost: empty mapping"),
        (
            "exchanges: {upbit: {daily_max_cost: 0}}",
            "config.yaml: exchanges.upbit.daily_max_cost: must be positive",
        ),
        ("trading: {max_event_age: 0}", "config.yaml: trading.max_event_age: must be positive"),
    ],
)
def test_money_limit_mistakes_name_the_key(text: str, message: str) -> None:
    """A wrong limit is one line naming the exact key (down to the quote currency), exit 78."""
    with pytest.raises(ConfigError) as err:
        config.loads("feed: {api_key: k}\n" + text, "config.yaml", env={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == ExitCode.CONFIG


@dataclass(frozen=True)
class _Inner:
    limits: float | dict[str, float] = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.limits, dict) and "BAD" in self.limits:
            raise SchemaError("limits.BAD", "not allowed")


@dataclass(frozen=True)
class _Outer:
    inner: _Inner


def test_schema_union_and_post_init_keys() -> None:
    """The schema names the part of a union value that is wrong, and a dataclass check may name a key
    below its own (used by the money limits above)."""
    assert build(_Outer, {"inner": {"limits": {"A": 2}}}).inner.limits == {"A": 2.0}
    with pytest.raises(SchemaError) as err:
        build(_Outer, {"inner": {"limits": {"A": "x"}}})
    assert str(err.value) == 'inner.limits.A: expected a number, got "x"'
    with pytest.raises(SchemaError) as err:
        build(_Outer, {"inner": {"limits": True}})
    assert str(err.value) == "inner.limits: expected a number or a mapping, got True"
    with pytest.raises(SchemaError) as err:
        build(_Outer, {"inner": {"limits": {"BAD": 1}}})
    assert str(err.value) == "inner.limits.BAD: not allowed"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "trading: {max_order_cost: .nan}",
            "trading.max_order_cost: expected a finite number or a mapping, got nan",
        ),
        ("trading: {max_order_cost: {USDT: .inf}}", "trading.max_order_cost.USDT: expected a finite number"),
        (
            "trading: {daily_max_cost: -.inf}",
            "trading.daily_max_cost: expected a finite number or a mapping, got -inf",
        ),
        ("trading: {max_event_age: .nan}", "trading.max_event_age: expected a finite number"),
        ("trading: {max_event_age: -1}", "trading.max_event_age: must be positive, got -1"),
        (
            "trading: {max_orders_per_announcement: 0}",
            "trading.max_orders_per_announcement: must be positive",
        ),
        ("trading: {price_max_age: 0}", "trading.price_max_age: must be positive"),
        ("trading: {max_clock_skew: -2}", "trading.max_clock_skew: must be positive"),
        ("trading: {strategy_deadline: 0}", "trading.strategy_deadline: must be positive"),
        (
            "trading: {max_tickers_per_announcement: 0}",
            "trading.max_tickers_per_announcement: must be positive",
        ),
        ("trading: {price_refresh: -1}", "trading.price_refresh: must be positive or 0"),
        ("feed: {api_key: k, heartbeat_timeout: .inf}", "feed.heartbeat_timeout: expected a finite number"),
        ("feed: {api_key: k, handshake_timeout: 0}", "feed.handshake_timeout: must be positive"),
        (
            "feed: {api_key: k, reconnect: {max_delay: .nan}}",
            "feed.reconnect.max_delay: expected a finite number",
        ),
        (
            "feed: {api_key: k, reconnect: {min_delay: 0}}",
            "feed.reconnect.min_delay: must be positive",  # 0 would reconnect in a tight loop
        ),
        (
            "feed: {api_key: k, reconnect: {min_delay: 10, max_delay: 5}}",
            "feed.reconnect.max_delay: must be at least min_delay",
        ),
        ("trading: {max_event_age: 99999999999999999999999}", "trading.max_event_age: out of range"),
        (
            "trading: {max_orders_per_announcement: -0}",
            "trading.max_orders_per_announcement: must be positive",
        ),
        ("trading: {max_open_cost: {USDT: 0}}", "trading.max_open_cost.USDT: must be positive"),
        ("trading: {daily_loss_limit: -5}", "trading.daily_loss_limit: must be positive"),
        ("trading: {max_clock_offset: .nan}", "trading.max_clock_offset: expected a finite number"),
        ("trading: {paper_balance: {USDT: -1}}", "trading.paper_balance.USDT: must not be negative"),
        ("alerts: {events: {nope: false}}", "alerts.events.nope: unknown alert event"),
        ("health: {port: 70000}", "health.port: a port is 0-65535"),
        ("health: {port: -1}", "health.port: a port is 0-65535"),
        ("health: {status_interval: -5}", "health.status_interval: must be positive or 0"),
        (
            "exchanges: {binance: {markets_refresh: -1}}",
            "exchanges.binance.markets_refresh: must be positive or 0",
        ),
        (
            "alerts: {webhook: {url: 'http://127.0.0.1/x', timeout: 0}}",
            "alerts.webhook.timeout: must be positive",
        ),
        (
            "strategies: [{name: s, module: m, price_max_age: -1}]",
            "strategies[0].price_max_age: must be positive",
        ),
    ],
)
def test_nan_inf_zero_and_negative_numbers_name_the_key(text: str, message: str) -> None:
    """NaN, infinities, zero and negative values for limits and timings (and ports out of range) are
    config errors naming the exact key, exit 78; where 0 means off it is allowed (next test)."""
    base = "" if text.startswith("feed:") else "feed: {api_key: k}\n"
    with pytest.raises(ConfigError) as err:
        config.loads(base + text, "config.yaml", env={})
    assert f"config.yaml: {message}" in str(err.value), str(err.value)
    assert err.value.exit_code == ExitCode.CONFIG


def test_zero_where_it_means_off_stays_valid() -> None:
    """`port: 0` (any free port), `status_interval: 0`, `markets_refresh: 0`, `price_refresh: 0` and
    `feed_down_after: 0` keep their documented meaning."""
    cfg = config.loads(
        "feed: {api_key: k}\nhealth: {port: 0, status_interval: 0}\nalerts: {feed_down_after: 0}\n"
        "exchanges: {binance: {markets_refresh: 0}}\ntrading: {price_refresh: 0}\n",
        "config.yaml",
        env={},
    )
    assert cfg.health.port == 0 and cfg.trading.price_refresh == 0


PAPER_WITH_KEYS = """
feed: {api_key: "${FEED_KEY}"}
exchanges:
  binance: {api_key: "${BINANCE_API_KEY}", secret: "${file:/nonexistent/binance-secret}"}
trading: {dry_run: DRY}
"""


def test_paper_mode_needs_no_exchange_keys() -> None:
    """A config written for live trading checks and runs in paper mode on a machine without the
    exchange keys (paper reads public data only); live, the same missing key is an error naming it."""
    env = {"FEED_KEY": "dsk_" + "b" * 64}
    cfg = config.loads(PAPER_WITH_KEYS.replace("DRY", "true"), source="c.yaml", env=env)
    assert cfg.exchanges["binance"].api_key is None and cfg.exchanges["binance"].secret is None
    with pytest.raises(ConfigError, match=r"c.yaml: exchanges.binance.api_key: environment variable"):
        config.loads(PAPER_WITH_KEYS.replace("DRY", "false"), source="c.yaml", env=env)


def test_show_config_works_with_secrets_unset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge import cli

    path = tmp_path / "c.yaml"
    path.write_text(PAPER_WITH_KEYS.replace("DRY", "false"))
    assert cli.main(["show-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "api_key: '***'" in out and "dry_run: false" in out
