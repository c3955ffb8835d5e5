"""The configuration: `config.yaml` parsed once into frozen dataclasses, every key checked up front.

Strings may hold `${VAR}` (environment), `${file:/path}` (file contents) or `${credential:NAME}`
(systemd's $CREDENTIALS_DIRECTORY/NAME). A mistake is one line naming the file and the key; exit 78.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml

from bridge import config_yaml_errors as yaml_errors
from bridge import secrets
from bridge.config_feed import (  # re-exported: the feed section is part of the config's API
    FeedConfig as FeedConfig,
)
from bridge.config_feed import check_feed
from bridge.config_ha import HAConfig as HAConfig  # re-exported: the `ha:` section
from bridge.config_io import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, count_nodes, read_bounded
from bridge.config_subst import substitute
from bridge.errors import ConfigError
from bridge.schema import ZERO_ALLOWED as ZERO_ALLOWED
from bridge.schema import SchemaError, build, check_section
from bridge.secrets import Secret

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]

# ccxt config keys that hold credentials: redacted in show-config and scrubbed from logs.
SECRET_KEY_PATTERN = re.compile(r"(key|secret|password|token|uid|private)", re.IGNORECASE)

# A money limit in quote currency (max_order_cost, daily_max_cost): a mapping per quote currency, keys
# spelled as ccxt spells quotes (upper case), e.g. {USDT: 100, KRW: 150000}; or a bare number, which
# applies to the USD stablecoin quotes below only (each on its own). An order in a quote currency the
# limit does not name is refused (no_limit_for_quote:KRW), never converted or guessed.
QuoteLimits: TypeAlias = float | dict[str, float]
USD_STABLECOINS = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "USD")


def quote_limits(limits: QuoteLimits) -> dict[str, float]:
    """The limit per quote currency: a bare number expanded to the USD stablecoins."""
    return dict(limits) if isinstance(limits, dict) else dict.fromkeys(USD_STABLECOINS, float(limits))


def _check_quote_limits(name: str, limits: QuoteLimits | None) -> None:
    """A SchemaError naming the key (relative to the section) of a limit that is not positive or of a
    quote currency not spelled as ccxt spells it."""
    if limits is None:
        return
    if not isinstance(limits, dict):
        if limits <= 0:
            raise SchemaError(name, "must be positive")
        return
    if not limits:
        raise SchemaError(name, "empty mapping: name at least one quote currency, e.g. {USDT: 100}")
    for quote, value in limits.items():
        if not quote or quote != quote.upper():
            hint = f" (write {quote.upper()})" if quote else ""
            raise SchemaError(f"{name}.{quote}", f"quotes are upper case, as ccxt spells them{hint}")
        if value <= 0:
            raise SchemaError(f"{name}.{quote}", "must be positive (leave a quote out to refuse its orders)")


def _check_numbers(section: object) -> None:
    """A SchemaError naming the key of a number that is NaN, infinite, negative, zero where 0 means
    nothing, or a port outside 0-65535 (the rule: bridge.schema.check_section)."""
    check_section(section)


@dataclass(frozen=True)
class ExchangeConfig:
    api_key: Secret | None = None
    secret: Secret | None = None
    password: Secret | None = None
    sandbox: bool = False
    market_types: tuple[str, ...] = ("spot",)
    # The ccxt exchange class of this account; None: the account's name. Two accounts on one venue:
    # `bybit_main: {venue: bybit, ...}` and `bybit_sub: {venue: bybit, ...}`.
    venue: str | None = None
    markets_refresh: float = 600.0
    # Not in repr: users may put credentials in here (apiKey, secret, uid, privateKey...).
    ccxt: dict[str, Any] = field(default_factory=dict, repr=False)
    # Most quote currency committed per UTC day by orders on this exchange, on top of (never instead
    # of) trading.daily_max_cost. Same shapes as trading.max_order_cost. None: no budget of its own.
    daily_max_cost: QuoteLimits | None = None

    def __post_init__(self) -> None:
        _check_numbers(self)
        _check_quote_limits("daily_max_cost", self.daily_max_cost)


@dataclass(frozen=True)
class TradingConfig:
    dry_run: bool = True
    max_event_age: float = 10.0
    # Largest single order (buys, and sells a strategy places; exits are never capped), per quote.
    max_order_cost: QuoteLimits = 100.0
    # Most quote currency committed per UTC day by strategy orders, per quote currency. None: no cap.
    daily_max_cost: QuoteLimits | None = None
    # Most quote currency held in open positions at once (their entry cost, plus entries in flight),
    # per quote currency: a new entry that would pass it is refused (`over_max_open_cost`). None: no cap.
    max_open_cost: QuoteLimits | None = None
    # Realised loss per UTC day, per quote currency, at which new entries halt (`loss_limit`) until the
    # next day or `bridge resume loss_limit`; exits go on. None: no limit.
    daily_loss_limit: QuoteLimits | None = None
    max_orders_per_announcement: int = 10
    allow_symbols: tuple[str, ...] | None = None
    deny_symbols: tuple[str, ...] = ()
    # Prices (best bid/ask) older than this many seconds are never used for a price cap, a paper fill,
    # an exit or ctx.price: an order then fetches its symbol's price once, or is skipped (no_price).
    price_max_age: float = 2.0
    # Seconds between batch price refreshes per exchange (one request for every symbol, off the order
    # path; Binance: weight 4 each). 0: no warm prices, every order fetches its own.
    price_refresh: float = 1.0
    # Paper mode's starting free balances per asset (what ctx.balance reports before any fill); paper
    # fills spend and add to them, and the paper journal keeps them across restarts (seeded once).
    paper_balance: dict[str, float] = field(default_factory=lambda: {"USDT": 1000.0})
    # An announcement whose event time is further in the future than this many seconds (our clock vs
    # the publisher's) is refused (`event_time_invalid`), as is an absurd one.
    max_clock_skew: float = 2.0
    # This host's clock may be off the venues' by this many seconds (measured at start and hourly);
    # beyond it trading halts (`clock_offset`).
    max_clock_offset: float = 1.0
    # Tickers of one announcement that are acted on (duplicates removed first); the rest are refused
    # with one log line.
    max_tickers_per_announcement: int = 20
    # Seconds a strategy may spend on one announcement before it is noticed as stuck
    # (`strategy.deadline_exceeded`, counted, named in the status line).
    strategy_deadline: float = 30.0

    def __post_init__(self) -> None:
        _check_numbers(self)
        for asset, amount in self.paper_balance.items():
            if amount < 0:  # 0 is a real balance: nothing of that asset to start with
                raise SchemaError(f"paper_balance.{asset}", f"must not be negative, got {amount}")
        _check_quote_limits("max_order_cost", self.max_order_cost)
        _check_quote_limits("daily_max_cost", self.daily_max_cost)
        _check_quote_limits("max_open_cost", self.max_open_cost)
        _check_quote_limits("daily_loss_limit", self.daily_loss_limit)


@dataclass(frozen=True)
class StrategyConfig:
    name: str
    module: str
    class_: str | None = None
    enabled: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    # Announcements of this strategy handled at once, each in its own task (an order that hangs holds
    # up no other); more wait their turn in arrival order, none is dropped.
    max_concurrent: int = 8
    # Prices older than this many seconds are not used for this strategy's orders (None: trading's).
    price_max_age: float | None = None

    def __post_init__(self) -> None:
        _check_numbers(self)
        if self.max_concurrent < 1:
            raise SchemaError("max_concurrent", f"must be a positive number, got {self.max_concurrent}")


ALERT_EVENTS = (
    "started",
    "stopping",
    "trading_halted",
    "trading_resumed",
    "feed_down",
    "key_expiring",
    "order_placed",
    "order_rejected",
    "exits_only",
    "exit_failed",
    "position_abandoned",
    "clock_offset",
    "feed_link_down",
    "ha_role",
    "reload_refused",
)


@dataclass(frozen=True)
class WebhookConfig:
    url: Secret  # a webhook URL usually embeds its own token
    timeout: float = 5.0

    def __post_init__(self) -> None:
        _check_numbers(self)


@dataclass(frozen=True)
class TelegramConfig:
    bot_token: Secret
    chat_id: str
    api_url: str = "https://api.telegram.org"
    timeout: float = 5.0
    # Commands from the phone (/status, /positions, /halt, /resume, /close, /reload): off unless true,
    # and then only from these Telegram user ids, in these chats (default: chat_id alone). One process
    # may poll a bot token (Telegram answers 409 to a second): give a second daemon its own bot.
    commands: bool = False
    allowed_user_ids: tuple[int, ...] = ()
    chat_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_numbers(self)
        if self.commands and not self.allowed_user_ids:
            raise SchemaError(
                "allowed_user_ids",
                "commands: true needs the Telegram user ids that may command (a group member who is not "
                "listed cannot)",
            )

    @property
    def command_chats(self) -> tuple[str, ...]:
        """The chats commands are accepted from."""
        return self.chat_ids or (self.chat_id,)


@dataclass(frozen=True)
class AlertsConfig:
    webhook: WebhookConfig | None = None
    telegram: TelegramConfig | None = None
    # Per-event on/off; events not named here are on. Names: see ALERT_EVENTS.
    events: dict[str, bool] = field(default_factory=dict)
    feed_down_after: float = 60.0  # seconds the feed must be down before `feed_down` is sent
    key_expiry_days: float = 7.0  # `key_expiring` when the feed key expires sooner than this
    # Which machine an alert comes from (two daemons, one chat): None means this host's name.
    host_label: str | None = None

    def __post_init__(self) -> None:
        _check_numbers(self)
        unknown = sorted(set(self.events) - set(ALERT_EVENTS))
        if unknown:
            raise SchemaError(
                f"events.{unknown[0]}", f"unknown alert event (known: {', '.join(ALERT_EVENTS)})"
            )

    def wants(self, event: str) -> bool:
        return self.events.get(event, True)


@dataclass(frozen=True)
class HealthConfig:
    enabled: bool = False
    host: str = "127.0.0.1"  # loopback by default: the endpoint has no authentication
    port: int = 8780
    status_interval: float = 60.0  # seconds between `daemon.status` log lines; 0 turns them off

    def __post_init__(self) -> None:
        _check_numbers(self)


@dataclass(frozen=True)
class JournalConfig:
    # Days announcements and their duplicate keys are kept (pruned at start, then daily); orders and
    # positions are kept whatever their age.
    retention_days: float = 30.0

    def __post_init__(self) -> None:
        _check_numbers(self)


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True)
class RuntimeConfig:
    # The event loop `bridge run` runs on: asyncio's own, or uvloop (`pip install uvloop`, Linux and
    # macOS). Measured in bench/latency.py (`--uvloop`); a change needs a restart.
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"


@dataclass(frozen=True)
class Config:
    feed: FeedConfig
    exchanges: dict[str, ExchangeConfig] = field(default_factory=dict)
    trading: TradingConfig = field(default_factory=TradingConfig)
    state_dir: Path = Path("./state")
    strategies: tuple[StrategyConfig, ...] = ()
    log: LogConfig = field(default_factory=LogConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    ha: HAConfig | None = None  # None: one host, no lease (bridge.ops.ha)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    source: str = field(default="<config>", compare=False, init=False)


def load(path: str | Path, *, offline: bool = False) -> Config:
    """Read and validate a config file. Raises ConfigError with a one-line, file-named message.
    `offline` (replay, listing strategies) lets unset secrets through as placeholders: nothing that
    needs them will run."""
    path = Path(path)
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return loads(text, source=str(path), offline=offline)


def one_line(text: str) -> str:
    """A message fit for one log or terminal line: control characters from the user's values shown
    escaped (a key or value holding a newline must not split the error)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def loads(
    text: str, source: str = "<config>", env: dict[str, str] | None = None, *, offline: bool = False
) -> Config:
    """Validate config text. `env` defaults to the process environment."""
    try:
        # libyaml: ten times faster than the pure-Python parser and it bounds nesting itself (1000)
        data = _parse(text)
    except _YamlMistake as exc:
        raise ConfigError(one_line(f"{source}: {exc}")) from None
    except RecursionError:  # the pure-Python parser (no libyaml) on deep nesting
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    except ValueError:  # Python refuses to convert an integer of thousands of digits
        raise ConfigError(f"{source}: not valid YAML: a number with too many digits") from None
    except yaml.YAMLError as exc:
        raise ConfigError(one_line(f"{source}: {yaml_errors.describe(exc, text)}")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    if count_nodes(data, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
        raise ConfigError(
            f"{source}: over {MAX_CONFIG_NODES} values once YAML aliases are expanded (an alias bomb?)"
        )
    too_deep = _deeper_than(data, MAX_CONFIG_DEPTH)
    if too_deep is not None:
        raise ConfigError(one_line(f"{source}: {too_deep}: nested deeper than {MAX_CONFIG_DEPTH} levels"))
    try:
        data = substitute(data, os.environ if env is None else env, offline=offline)
        config = build(Config, data)
        feed = data.get("feed")
        _check(config, url_given=isinstance(feed, dict) and "url" in feed)
    except SchemaError as exc:
        raise ConfigError(one_line(f"{source}: {exc}")) from None
    _register_ccxt_secrets(config)
    object.__setattr__(config, "source", source)  # frozen; set once, here, where it is known
    return config


_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YamlMistake(Exception):
    """Valid YAML that would not mean what it seems to: a key given twice, `yes` read as a boolean."""


def _parse(text: str) -> Any:
    """The YAML document as data, composed first (by libyaml where there is one) so that its nodes can be
    checked: a key given twice in one mapping (YAML keeps the last silently: a second `dry_run: false`
    would trade live) and YAML 1.1 booleans (yes/no/on/off) are refused; only true/false are booleans."""
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node) -> None:
    """Raise _YamlMistake naming the key of the first duplicate key or yes/no/on/off boolean. Iterative,
    each node once: an alias (a bomb's thousand references to one node) is not walked again."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _BOOL_TAG and node.value.lower() not in ("true", "false"):
                where = key or "(top level)"
                raise _YamlMistake(
                    f"{where}: `{node.value}` (line {node.start_mark.line + 1}) is not a boolean here: write "
                    f'true or false (only those are booleans; quote it, "{node.value}", if you mean the text)'
                )
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, f"{key}[{i}]") for i, v in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            children: list[tuple[yaml.Node, str]] = []
            for k, v in node.value:
                name = k.value if isinstance(k, yaml.ScalarNode) else "?"  # a key may be a whole mapping
                sub = f"{key}.{name}" if key else name
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                    line = k.start_mark.line + 1
                    if (k.tag, k.value) in lines:
                        raise _YamlMistake(
                            f"{sub}: duplicate key (lines {lines[k.tag, k.value]} and {line}): YAML would "
                            "silently keep the last one; remove one"
                        )
                    lines[k.tag, k.value] = line
                children += [(k, sub), (v, sub)]
            stack.extend(reversed(children))


# Levels of mappings and lists: a real config (ccxt options included) needs fewer than 10. Checked
# before anything walks the data recursively.
MAX_CONFIG_DEPTH = 32


def _deeper_than(data: Any, limit: int) -> str | None:
    """The key path of the first value nested deeper than `limit` levels, or None. Iterative; runs
    after the node count, so it walks a bounded number of values."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, key, depth = stack.pop()
        if depth > limit:
            return key
        if isinstance(node, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(node))
    return None


def _check(config: Config, *, url_given: bool) -> None:
    check_feed(config.feed, url_given=url_given)
    names = [s.name for s in config.strategies]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise SchemaError(f"strategies[{i}].name", f'duplicate strategy name "{name}"')
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", name):
            raise SchemaError(f"strategies[{i}].name", "use 1-40 letters, digits, _ . -")
    for ex_id, ex in config.exchanges.items():
        if not config.trading.dry_run:
            for name, value in (("api_key", ex.api_key), ("secret", ex.secret)):
                if value is None:
                    raise SchemaError(f"exchanges.{ex_id}.{name}", "live trading (dry_run: false) needs it")


def _register_ccxt_secrets(config: Config) -> None:
    for ex in config.exchanges.values():
        for value in _secret_values(ex.ccxt):
            secrets.register(value)


def _secret_values(node: Any, secret: bool = False) -> list[str]:
    if isinstance(node, dict):
        out: list[str] = []
        for k, v in node.items():
            out += _secret_values(v, secret or bool(SECRET_KEY_PATTERN.search(str(k))))
        return out
    if isinstance(node, list):
        return [s for v in node for s in _secret_values(v, secret)]
    return [node] if secret and isinstance(node, str) else []


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data with every secret replaced by `***` (for show-config)."""

    def walk(node: Any, secret: bool = False) -> Any:
        if isinstance(node, Secret):
            return secrets.REDACTED
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            return {
                f.name.rstrip("_"): walk(getattr(node, f.name))
                for f in dataclasses.fields(node)
                if f.name != "source"
            }
        if isinstance(node, dict):
            return {k: walk(v, secret or bool(SECRET_KEY_PATTERN.search(str(k)))) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v, secret) for v in node]
        if isinstance(node, Path):
            return str(node)
        if secret and isinstance(node, str):
            return secrets.REDACTED
        return node

    result: dict[str, Any] = walk(config)
    return result
