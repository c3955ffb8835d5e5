"""How bridge sets up its ccxt instance: the config and market types it gets, the subclass that notes
failed responses and keeps to bridge's request budget, and each exchange's client-order-id format.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import ccxt.async_support as ccxt_async

from bridge import telemetry
from bridge.config import ExchangeConfig
from bridge.venues.errors import note_response
from bridge.venues.ratelimit import TokenBucket

ORDER_TIMEOUT_MS = 5_000  # ccxt's per-request timeout; its own default (10 s) is too long for an order

_CCXT_CREDENTIALS = ("apiKey", "secret", "password", "uid", "login", "privateKey", "walletAddress", "token")


def ccxt_config(cfg: ExchangeConfig, *, dry_run: bool) -> dict[str, Any]:
    """The constructor config of the ccxt instance: bridge's defaults, the keys, the user's `ccxt` block."""
    config: dict[str, Any] = {
        # on, so ccxt calls throttle() with every request's cost; who decides: see types.Limiter
        "enableRateLimit": True,
        "timeout": ORDER_TIMEOUT_MS,
    }
    for key, value in (("apiKey", cfg.api_key), ("secret", cfg.secret)):
        if value is not None:
            config[key] = value.reveal()
    if cfg.password is not None:
        config["password"] = cfg.password.reveal()
    merged = _deep_merge(config, cfg.ccxt)  # the user's ccxt settings win
    if dry_run:
        # Paper mode reads public data only. Without credentials, even a strategy that calls the
        # raw ccxt object (ctx.exchange) cannot place a real order.
        for key in _CCXT_CREDENTIALS:
            merged.pop(key, None)
    return merged


def limit_market_loading(ex: Any, cfg: ExchangeConfig) -> None:
    """Load only the configured market types: binance loads 7 endpoints by default, 1 with this.
    Options the user set under `ccxt.options` are left alone."""
    user = cfg.ccxt.get("options") or {}
    types = list(cfg.market_types)
    if isinstance(ex, ccxt_async.binance | ccxt_async.bybit):  # they load USDT perpetuals as "linear"
        types = ["linear" if kind == "swap" else kind for kind in types]
    current = ex.options.get("fetchMarkets")
    if "fetchMarkets" not in user:
        if isinstance(current, dict) and "types" in current:
            ex.options["fetchMarkets"] = {**current, "types": types}
        elif isinstance(current, list):
            ex.options["fetchMarkets"] = types
    if isinstance(ex, ccxt_async.bybit | ccxt_async.okx | ccxt_async.gate) and "fetchCurrencies" not in user:
        # Markets need no currency list, and with keys its request is a signed one on every (re)load:
        # bybit GET asset/coin/query-info (cost 28 of its 50/s), okx asset/currencies (5/3), gate
        # spot/currencies; no option turns it off, so the instance's own `has` does (the class's stays).
        ex.has = {**ex.has, "fetchCurrencies": False}
    if isinstance(ex, ccxt_async.binance):
        for key in ("fetchCurrencies", "fetchMargins"):  # private calls nobody here needs
            if key not in user:
                ex.options[key] = False


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ----- the recording, budget-keeping subclass -----


@dataclass
class OrderCall:
    """One create_order in progress. `reserved`: the budget OrderRouter took for it before its last
    gate check (None if it did not), so its request charges only the difference."""

    reserved: float | None
    charged: float | None = None  # the order request's real cost, once its throttle call has seen it
    received_mono_ns: int = 0  # the feed frame behind the order (bridge_order_internal_seconds); 0: none


# Set by Exchange.create_order around its ccxt call; read by the throttle of that call's request.
order_call: ContextVar[OrderCall | None] = ContextVar("bridge_order_call", default=None)


@functools.cache
def recording(cls: Any) -> Any:
    """A subclass of a ccxt exchange class that notes each error response in the task's context and,
    when given a `bridge_bucket`, keeps to that budget instead of ccxt's throttle."""

    def on_rest_response(self: Any, code: int, reason: str, url: str, method: str, *rest: Any) -> Any:
        headers, body = rest[0], rest[1]
        note_response(code, headers, body)
        return cls.on_rest_response(self, code, reason, url, method, *rest)

    async def throttle(self: Any, cost: Any = None) -> Any:
        bucket: TokenBucket | None = getattr(self, "bridge_bucket", None)
        if bucket is None:
            return await cls.throttle(self, cost)
        units = float((self.tokenBucket or {}).get("cost", 1) if cost is None else cost)
        call = order_call.get()
        if call is not None and call.charged is None:  # the order's own request
            call.charged = units
            if call.reserved is not None:
                if units > call.reserved:
                    bucket.reserve(units - call.reserved)  # a debt later requests wait for; this goes
                else:
                    bucket.refund(call.reserved - units)
                return None
        delay = bucket.reserve(units)
        if delay > 0:
            await asyncio.sleep(delay)  # over the exchange's budget: this request waits its turn
        return None

    async def fetch(self: Any, url: Any, method: Any = "GET", headers: Any = None, body: Any = None) -> Any:
        call = order_call.get()
        if call is not None and call.received_mono_ns:  # the order's first request: observed once
            telemetry.observe_order_written(call.received_mono_ns)
            call.received_mono_ns = 0
        return await cls.fetch(self, url, method, headers, body)

    attrs = {"on_rest_response": on_rest_response, "throttle": throttle, "fetch": fetch}
    return type(cls.__name__, (cls,), attrs)


# ----- client order ids -----

# Each venue's prefix and length: its dialect (bridge.venues.dialects).
CLIENT_ID_BASE = re.compile(r"[A-Za-z0-9]{1,64}")
