"""Binance spot market orders without ccxt's per-order overhead, with ccxt's own formatting and answers.

A spot market order's request is four fixed fields and one size; the size is formatted by ccxt's own
precision helpers, the answer goes through ccxt's `fetch` (errors, the failed-response hook) and
`parse_order`, unchanged. At start the request built here is compared with ccxt's create_order_request
for the same orders: any difference (a new ccxt version, an option such as selfTradePrevention)
switches the fast path off. The signed parameters travel in the query string, which Binance accepts
for POST: a request without a body is written in the same step of the event loop instead of by a
task one step later.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from bridge.venues.types import Side

# Formatted sizes are kept per (kind, size, precision): ccxt's precision functions are pure, Decimal
# based and slow (~0.1 ms cold), and a new listing's symbol shares its tick size with many others.
MAX_FORMATTED = 4096


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


class BinanceSpotOrders:
    def __init__(self, ex: Any) -> None:
        self._ex = ex
        self._secret = ex.secret.encode()
        self._headers = {"X-MBX-APIKEY": ex.apiKey}
        self._response_type = ex.safe_string(ex.options.get("newOrderRespType") or {}, "market", "FULL")
        self._formatted: dict[tuple[str, float, Any], str] = {}
        self._recv_window = ex.safe_integer(ex.options, "recvWindow")  # what ccxt's sign() adds
        config = ex.api["private"]["post"]["order"]
        self.cost = float(ex.calculate_rate_limiter_cost(["private"], "POST", "order", {}, config))

    def handles(self, market: dict[str, Any]) -> bool:
        """Spot, not a tokenized stock, and MARKET among the market's order types (as ccxt checks)."""
        info = market.get("info") or {}
        return (
            market.get("spot") is True and not market.get("stock") and "MARKET" in info.get("orderTypes", ())
        )

    def request(
        self, market: dict[str, Any], side: Side, *, cost: float | None, amount: float | None
    ) -> dict[str, Any]:
        """What ccxt's create_order_request returns for this market order, minus the client id."""
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

    def _format(self, kind: Literal["cost", "amount"], market: dict[str, Any], size: float) -> str:
        # the inputs of ccxt's cost_to_precision ("cost" else "price" precision) and amount_to_precision
        digits = market["precision"]
        precision = (digits.get("cost"), digits.get("price")) if kind == "cost" else digits.get("amount")
        key = (kind, size, precision)
        text = self._formatted.get(key)
        if text is None:
            convert = self._ex.cost_to_precision if kind == "cost" else self._ex.amount_to_precision
            text = str(convert(market["symbol"], size))
            if len(self._formatted) >= MAX_FORMATTED:
                self._formatted.clear()
            self._formatted[key] = text
        return text

    def matches_ccxt(self, market: dict[str, Any]) -> bool:
        """Does `request` build what ccxt's create_order_request builds, for each side and size kind?"""
        ex = self._ex
        for side in ("buy", "sell"):
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
    ) -> dict[str, Any]:
        """Send one market order (exactly one of `cost`, `amount`) and return ccxt's unified order for
        the answer. Raises what ccxt's own create_order would raise for the same answer."""
        ex = self._ex
        params = {
            "timestamp": ex.nonce(),
            **self.request(market, side, cost=cost, amount=amount),
            "newClientOrderId": client_order_id,
        }
        if self._recv_window is not None:
            params["recvWindow"] = self._recv_window
        query = ex.urlencode(params)
        signature = hmac.new(self._secret, query.encode(), hashlib.sha256).hexdigest()
        url = f"{ex.urls['api']['private']}/order?{query}&signature={signature}"
        response = await ex.fetch(url, "POST", dict(self._headers), None)
        order: dict[str, Any] = ex.parse_order(response, market)
        return order
