"""Mistakes in a valid config that would cost money: found by `check-config`, refused by `run`.

`lint(config)` returns findings, each an error (`check-config` and `run` exit 78 on the first) or a
warning (printed by `check-config`, logged as `config.warning` by `run`), naming the key:

- a strategy's `exchange` that is not under `exchanges:` (error);
- `publishers` / `listing_types` the feed never sends as spelled: wrong case or spaces (`Upbit` never
  matches `upbit`: error); a lower-case value the feed is not known to send (warning: the feed's
  vocabulary grows, a new publisher must not need a release);
- a `quote` not in upper case, as ccxt spells quotes (error);
- a `cost` (times its `leverage`: the notional) above trading.max_order_cost for its `quote`, or a
  quote that limit does not name (warning: every order would be refused);
- `market: swap` on an exchange whose `market_types` do not load swap (error naming
  `exchanges.NAME.market_types`);
- `stop_loss`, `trailing_stop`, `max_slippage`, `exit_slippage` of 1 or more where a fraction is meant
  (error); `take_profit` of 1 or more (warning: +100 % and more can be meant);
- any string that looks like a shell `$VAR` or an unexpanded `${...}` (warning).

Strategy params are the plugin's own: these checks apply to a param by its name only (a user plugin
with a `cost` or `quote` param gets the same checks), to every enabled strategy that has it, with
the values it will run with (its Params' defaults included, when the caller passes them).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bridge.config import SECRET_KEY_PATTERN, Config, quote_limits
from bridge.secrets import Secret

# What the feed sends (docs: cryptolisting-api.md); publishers lowercased by bridge.feed.codec.
KNOWN_PUBLISHERS = ("binance", "upbit", "bithumb")
KNOWN_LISTING_TYPES = (
    "spot_listing",
    "spot_delisting",
    "futures_listing",
    "futures_delisting",
    "hodler_airdrop",
    "monitoring_tag_extend",
    "monitoring_tag_remove",
    "caution_released",
    "not_listing",
)
FRACTIONS = ("stop_loss", "trailing_stop", "max_slippage", "exit_slippage")
_SHELL_VAR = re.compile(r"\$\{|(?<![\w$])\$[A-Za-z_]\w*")
_WHOLE_VAR = re.compile(r"\$\{?[A-Za-z_]\w*\}?|.*\$\{.*")


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    key: str
    message: str

    def line(self, source: str) -> str:
        return f"{source}: {self.key}: {self.message}"


def lint(config: Config, params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Finding]:
    """Every finding, errors first. `params`: each enabled strategy's params as it will run with them,
    by strategy name (defaults included); a strategy not in it is checked on its config params."""
    found: list[Finding] = []
    for i, spec in enumerate(config.strategies):
        if spec.enabled:
            values = (params or {}).get(spec.name, spec.params)
            found += _strategy(config, f"strategies[{i}].params", values)
    found += _variables(config, "")
    return sorted(found, key=lambda f: f.level != "error")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _strategy(config: Config, where: str, p: Mapping[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    exchange = p.get("exchange")
    if isinstance(exchange, str) and exchange not in config.exchanges:
        known = ", ".join(config.exchanges) or "none"
        message = f'"{exchange}" is not under exchanges: (configured: {known}); its orders would all fail'
        found.append(Finding("error", f"{where}.exchange", message))
    for name, known_values, lower in (
        ("publishers", KNOWN_PUBLISHERS, True),
        ("listing_types", KNOWN_LISTING_TYPES, False),
    ):
        found += _vocabulary(f"{where}.{name}", p.get(name), known_values, lower=lower)
    if p.get("market") == "swap" and isinstance(exchange, str) and exchange in config.exchanges:
        types = config.exchanges[exchange].market_types
        if "swap" not in types:  # an error, not a silent load: swap markets bring a hedge-mode check
            message = (
                f"{where}.market is swap but {exchange} loads only {', '.join(types) or 'no'} markets: "
                "add swap, or every perpetual order would be skipped (unknown symbol)"
            )
            found.append(Finding("error", f"exchanges.{exchange}.market_types", message))
    quote = p.get("quote")
    if isinstance(quote, str) and quote != quote.upper():
        message = f"quotes are upper case, as ccxt spells them (write {quote.upper()})"
        found.append(Finding("error", f"{where}.quote", message))
    cost = _number(p.get("cost"))
    leverage = _number(p.get("leverage"))
    if cost is not None and leverage is not None and leverage > 1:
        cost *= leverage  # on a perpetual the limits count the notional: margin x leverage
    if cost is not None and isinstance(quote, str):
        limit = quote_limits(config.trading.max_order_cost).get(quote.upper())
        if limit is None:
            message = (
                f"trading.max_order_cost names no limit for {quote.upper()}: every order would be refused"
            )
            found.append(Finding("warning", f"{where}.cost", message))
        elif cost > limit:
            message = (
                f"{cost:g} is above trading.max_order_cost for {quote.upper()} ({limit:g}): "
                "every order would be refused"
            )
            found.append(Finding("warning", f"{where}.cost", message))
    for name in FRACTIONS:
        value = _number(p.get(name))
        if value is not None and value >= 1:
            message = f"a fraction is meant (0.05 = 5 %); {value:g} is {value * 100:g} %"
            found.append(Finding("error", f"{where}.{name}", message))
    take_profit = _number(p.get("take_profit"))
    if take_profit is not None and take_profit >= 1:
        message = (
            f"{take_profit:g} sells at +{take_profit * 100:g} % (a fraction: 0.5 = +50 %); "
            "fine if that is meant"
        )
        found.append(Finding("warning", f"{where}.take_profit", message))
    return found


def _vocabulary(key: str, values: object, known: tuple[str, ...], *, lower: bool) -> list[Finding]:
    if not isinstance(values, list | tuple):
        return []
    found: list[Finding] = []
    for j, value in enumerate(values):
        if not isinstance(value, str) or value in known:
            continue
        norm = value.strip().lower()
        if norm in known or (lower and norm != value):
            spelled = "lower case" if lower else "spelled"
            message = f'the feed sends these {spelled} as in its docs: "{value}" never matches (write {norm})'
            found.append(Finding("error", f"{key}[{j}]", message))
        else:
            message = (
                f'"{value}" is not one the feed is known to send ({", ".join(known)}): it may never match'
            )
            found.append(Finding("warning", f"{key}[{j}]", message))
    return found


def _variables(node: object, key: str, secret: bool = False) -> list[Finding]:
    """Strings that look like a shell variable left unexpanded. A secret's value is never shown, and
    counts only if it is the whole value (a password may hold a `$`)."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [
            finding
            for f in dataclasses.fields(node)
            if f.name != "source"
            for finding in _variables(getattr(node, f.name), _join(key, f.name.rstrip("_")))
        ]
    if isinstance(node, Mapping):
        return [
            finding
            for k, v in node.items()
            for finding in _variables(
                v, _join(key, str(k)), secret or bool(SECRET_KEY_PATTERN.search(str(k)))
            )
        ]
    if isinstance(node, list | tuple):
        return [finding for i, v in enumerate(node) for finding in _variables(v, f"{key}[{i}]", secret)]
    if isinstance(node, Secret) or (secret and isinstance(node, str)):
        text = node.reveal() if isinstance(node, Secret) else node
        if _WHOLE_VAR.fullmatch(text):
            return [Finding("warning", key, _UNEXPANDED)]
        return []
    value = str(node) if isinstance(node, Path) else node
    if isinstance(value, str) and (match := _SHELL_VAR.search(value)):
        return [Finding("warning", key, f"`{match.group()}` {_UNEXPANDED}")]
    return []


_UNEXPANDED = 'looks like an unexpanded variable: bridge expands only "${VAR}" (quoted), and used it as text'


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
