"""Binance spot market orders without ccxt's per-order overhead, with ccxt's own request and answers.

ccxt builds the order request (market id, precision, response type) once per symbol, side and size;
each order then only adds its client id, timestamp and HMAC signature, and goes out through ccxt's
`fetch` (so errors, the failed-response hook and the answer's parsing are ccxt's, unchanged). The
signed parameters travel in the query string, which Binance accepts for POST: a request without a
body is written in the same step of the event loop instead of by a task one step later.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

# Templates are per (symbol, side, cost, amount); strategies use a few fixed sizes. Cleared when
# full, and whenever the markets are reloaded (precision may have changed).
MAX_TEMPLATES = 4096


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
        self._templates: dict[tuple[str, str, float | None, float | None], dict[str, Any]] = {}
        self._markets_of: Any = None
        cost = ex.api["private"]["post"]["order"]
        self.cost = float(ex.calculate_rate_limiter_cost(["private"], "POST", "order", {}, cost))

    def handles(self, market: dict[str, Any]) -> bool:
        return market.get("spot") is True and not market.get("stock")

    async def create(
        self,
        market: dict[str, Any],
        side: Literal["buy", "sell"],
        client_order_id: str,
        *,
        cost: float | None,
        amount: float | None,
    ) -> dict[str, Any]:
        """Send one market order (exactly one of `cost`, `amount`) and return ccxt's unified order for
        the answer. Raises what ccxt's own create_order would raise for the same answer."""
        ex = self._ex
        template = self._template(market["symbol"], side, cost, amount)
        params = {"timestamp": ex.nonce(), **template, "newClientOrderId": client_order_id}
        recv_window = ex.safe_integer(ex.options, "recvWindow")
        if recv_window is not None:
            params["recvWindow"] = recv_window
        query = ex.urlencode(params)
        signature = hmac.new(self._secret, query.encode(), hashlib.sha256).hexdigest()
        url = f"{ex.urls['api']['private']}/order?{query}&signature={signature}"
        response = await ex.fetch(url, "POST", dict(self._headers), None)
        order: dict[str, Any] = ex.parse_order(response, market)
        return order

    def _template(self, symbol: str, side: str, cost: float | None, amount: float | None) -> dict[str, Any]:
        ex = self._ex
        if ex.markets is not self._markets_of or len(self._templates) >= MAX_TEMPLATES:
            self._templates, self._markets_of = {}, ex.markets
        key = (symbol, side, cost, amount)
        template = self._templates.get(key)
        if template is None:
            # The arguments ccxt's create_market_{buy,sell}_order_with_cost / create_order pass on.
            extra: dict[str, Any] = {}
            if cost is not None:
                extra = {"cost": cost} if side == "buy" else {"quoteOrderQty": cost}
            request = ex.create_order_request(
                symbol,
                "market",
                side,
                cost if cost is not None else amount,
                None,
                {**extra, "clientOrderId": "_", "isAlgoOrder": False},
            )
            request.pop("newClientOrderId", None)
            template = self._templates[key] = request
        return template
