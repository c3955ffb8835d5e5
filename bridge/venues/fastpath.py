"""Binance spot market and limit IOC orders without ccxt's per-order overhead, with ccxt's own formatting
and answers.

A spot market order's request is four fixed fields and one size; a limit IOC order's is five fixed
fields (type LIMIT, timeInForce IOC), its amount and its price. Sizes and prices are formatted as
ccxt's precision helpers (amount_to_precision, cost_to_precision, price_to_precision) format them: in
TICK_SIZE mode (binance's) by `precision.tick_text`, held to ccxt's results by a property test, else
by those helpers; the query string is encoded as ccxt's `urlencode` does (`query`). The answer goes
through ccxt's `fetch` (errors, the failed-response hook) and `parse_order`, unchanged. At start
the request built here is compared with ccxt's create_order_request for the same orders, market and
limit IOC: any difference (a new ccxt version, an option such as selfTradePrevention) switches the
fast path off. The signed parameters travel in the query string, which Binance accepts
for POST: a request without a body is written in the same step of the event loop instead of by a
task one step later.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any, Literal

import ccxt.async_support as ccxt_async
import structlog
from ccxt.base.decimal_to_precision import TICK_SIZE

from bridge.venues.errors import describe
from bridge.venues.precision import tick_of, tick_text
from bridge.venues.types import Side

# the adapter's logger name: these events are the exchange's, wherever the code lives
log = structlog.get_logger("bridge.venues.exchange")

# Formatted sizes and prices are kept per (kind, value, precision): ccxt's precision functions are pure,
# Decimal based and slow (~0.1 ms cold), and a new listing's symbol shares its tick size with many others.
MAX_FORMATTED = 4096


# What urllib's quote leaves as it is (its default safe "/" aside): such text needs no encoding.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def query(ex: Any, params: Mapping[str, Any]) -> str:
    """`params` as ccxt's urlencode encodes them (booleans as true/false, other values by str, in
    order), joined directly when nothing needs quoting (an order's fields, digits and a client id);
    through ccxt's urlencode otherwise."""
    parts = []
    for key, value in params.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if _PLAIN.fullmatch(key) is None or _PLAIN.fullmatch(text) is None:
            return str(ex.urlencode(dict(params)))
        parts.append(f"{key}={text}")
    return "&".join(parts)


def can_sign(ex: Any) -> bool:
    """Can the fast path sign for this (binance) ccxt instance: an HMAC secret (RSA and Ed25519 keys
    stay with ccxt) and no portfolio-margin default (its orders go to another endpoint)."""
    secret = getattr(ex, "secret", None)
    return (
        isinstance(secret, str)
        and bool(secret)
        and "PRIVATE KEY" not in secret
        and bool(ex.apiKey)
        and not ex.safe_bool_2(ex.options, "papi", "portfolioMargin", False)
    )


def select(ex: Any, exchange_id: str, *, ccxt_limiter: bool) -> BinanceSpotOrders | None:
    """The fast path for ccxt's binance itself (its subclasses have other URLs) with an HMAC key, unless
    ccxt's limiter was asked for (then all of ccxt's path), once it has proved to build ccxt's requests
    (market and limit IOC) on a market that takes both. Otherwise None, logged."""
    if type(ex).__mro__[1] is not ccxt_async.binance or ccxt_limiter or not can_sign(ex):
        return None
    fast = BinanceSpotOrders(ex)
    markets = (ex.markets or {}).values()
    sample = next((m for m in markets if fast.handles(m) and fast.handles(m, limit=True)), None)
    try:
        same = sample is not None and fast.matches_ccxt(sample)
    except Exception as exc:  # noqa: BLE001 - any surprise in ccxt means: keep ccxt's own path
        log.warning("exchange.fast_path_off", exchange=exchange_id, error=describe(exc))
        return None
    if not same:
        log.warning("exchange.fast_path_off", exchange=exchange_id, reason="request differs from ccxt's")
        return None
    return fast


class BinanceSpotOrders:
    def __init__(self, ex: Any) -> None:
        self._ex = ex
        self._secret = ex.secret.encode()
        self._headers = {"X-MBX-APIKEY": ex.apiKey}
        response_types = ex.options.get("newOrderRespType") or {}
        self._response_type = ex.safe_string(response_types, "market", "FULL")
        self._limit_response_type = ex.safe_string(response_types, "limit", "FULL")
        self._formatted: dict[tuple[str, float, Any], str] = {}
        self._recv_window = ex.safe_integer(ex.options, "recvWindow")  # what ccxt's sign() adds
        config = ex.api["private"]["post"]["order"]
        self.cost = float(ex.calculate_rate_limiter_cost(["private"], "POST", "order", {}, config))

    def handles(self, market: dict[str, Any], *, limit: bool = False) -> bool:
        """Spot, not a tokenized stock, and the order's type (MARKET, or LIMIT for a limit IOC) among the
        market's order types (as ccxt checks)."""
        info = market.get("info") or {}
        wanted = "LIMIT" if limit else "MARKET"
        return market.get("spot") is True and not market.get("stock") and wanted in info.get("orderTypes", ())

    def request(
        self,
        market: dict[str, Any],
        side: Side,
        *,
        cost: float | None,
        amount: float | None,
        price: float | None = None,
    ) -> dict[str, Any]:
        """What ccxt's create_order_request returns for this order, minus the client id: a market order,
        or with `price` a limit IOC order (sized by `amount`)."""
        if price is not None:
            assert amount is not None, "a limit order is sized by amount"
            return {
                "symbol": market["id"],
                "side": side.upper(),
                "newOrderRespType": self._limit_response_type,
                "type": "LIMIT",
                "quantity": self._format("amount", market, amount),
                "price": self._format("price", market, price),
                "timeInForce": "IOC",
            }
        request: dict[str, Any] = {
            "symbol": market["id"],
            "side": side.upper(),
            "newOrderRespType": self._response_type,
            "type": "MARKET",
        }
        if cost is not None:
            request["quoteOrderQty"] = self._format("cost", market, cost)
        else:
            assert amount is not None
            request["quantity"] = self._format("amount", market, amount)
        return request

    def _format(self, kind: Literal["cost", "amount", "price"], market: dict[str, Any], size: float) -> str:
        # the inputs of ccxt's cost_to_precision ("cost" else "price" precision), amount_to_precision
        # and price_to_precision
        digits = market["precision"]
        precision = (digits.get("cost"), digits.get("price")) if kind == "cost" else digits.get(kind)
        key = (kind, size, precision)
        text = self._formatted.get(key)
        if text is None and self._ex.precisionMode == TICK_SIZE:
            # cost_to_precision reads the cost precision, else the price's; price_to_precision rounds
            # half up, the others truncate; a "0" is left to ccxt, which refuses it
            grid = precision if kind != "cost" else precision[0] if precision[0] is not None else precision[1]
            tick = None if grid is None else tick_of(grid)
            if tick is not None:
                text = tick_text(size, tick, half_up=kind == "price")
                text = None if text == "0" else text
        if text is None:
            ex = self._ex
            convert = {
                "cost": ex.cost_to_precision,
                "amount": ex.amount_to_precision,
                "price": ex.price_to_precision,
            }[kind]
            text = str(convert(market["symbol"], size))
            if len(self._formatted) >= MAX_FORMATTED:
                self._formatted.clear()
            self._formatted[key] = text
        return text

    def matches_ccxt(self, market: dict[str, Any]) -> bool:
        """Does `request` build what ccxt's create_order_request builds, for each side and size kind of
        a market order and for a limit IOC order on each side?"""
        ex = self._ex
        sides: tuple[Side, Side] = ("buy", "sell")
        for side in sides:
            limit_amount, limit_price = 1.23456789123, 12345.6789123
            ioc = {"timeInForce": "IOC", "clientOrderId": "_", "isAlgoOrder": False}
            theirs = ex.create_order_request(market["symbol"], "limit", side, limit_amount, limit_price, ioc)
            theirs.pop("newClientOrderId", None)
            if theirs != self.request(market, side, cost=None, amount=limit_amount, price=limit_price):
                return False
            for cost, amount in ((12.3456789123, None), (None, 1.23456789123)):
                extra: dict[str, Any] = {}
                if cost is not None:
                    extra = {"cost": cost} if side == "buy" else {"quoteOrderQty": cost}
                size = cost if cost is not None else amount
                params = {**extra, "clientOrderId": "_", "isAlgoOrder": False}
                theirs = ex.create_order_request(market["symbol"], "market", side, size, None, params)
                theirs.pop("newClientOrderId", None)
                if theirs != self.request(market, side, cost=cost, amount=amount):
                    return False
        return True

    async def create(
        self,
        market: dict[str, Any],
        side: Side,
        client_order_id: str,
        *,
        cost: float | None,
        amount: float | None,
        price: float | None = None,
    ) -> dict[str, Any]:
        """Send one market order (exactly one of `cost`, `amount`), or with `price` one limit IOC order
        (sized by `amount`), and return ccxt's unified order for the answer. Raises what ccxt's own
        create_order would raise for the same answer."""
        ex = self._ex
        params = {
            "timestamp": ex.nonce(),
            **self.request(market, side, cost=cost, amount=amount, price=price),
            "newClientOrderId": client_order_id,
        }
        if self._recv_window is not None:
            params["recvWindow"] = self._recv_window
        signed = query(ex, params)
        signature = hmac.digest(self._secret, signed.encode(), "sha256").hex()
        url = f"{ex.urls['api']['private']}/order?{signed}&signature={signature}"
        response = await ex.fetch(url, "POST", dict(self._headers), None)
        order: dict[str, Any] = ex.parse_order(response, market)
        return order
