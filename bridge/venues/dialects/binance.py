"""Binance (ccxt `binance` and its subclasses): spot through ccxt or the fast path (bridge.venues.fastpath),
resting STOP_LOSS / STOP_LOSS_LIMIT sells on spot (bridge.venues.stops), the key checked on the account
endpoint, and a request budget from the published weight limit.

Binance's REST limit is request weight per minute (6,000 on api/v3; ccxt's rateLimit of 50 ms per cost
unit spreads it evenly), so the budget lets 5 % of a minute's weight out at once and refills the rest.
"""

from __future__ import annotations

from typing import Any

from bridge.venues import stops
from bridge.venues.dialect import Dialect
from bridge.venues.types import Side


class BinanceDialect(Dialect):
    client_id_max = 36  # newClientOrderId: ^[.A-Z:/a-z0-9_-]{1,36}$
    budget_window_s = 60.0

    def supports_stops(self, ex: Any, symbol: str) -> bool:
        return stops.supported(ex, symbol)

    async def place_stop(
        self,
        ex: Any,
        market: dict[str, Any],
        *,
        side: Side,
        amount: float,
        stop_price: float,
        limit_price: float | None,
        client_order_id: str,
    ) -> dict[str, Any]:
        if side != "sell" or market.get("spot") is not True:
            raise NotImplementedError(f"{self.venue}: only spot stop-loss sells rest on the exchange")
        return await stops.place(ex, market["symbol"], amount, stop_price, limit_price, client_order_id)

    async def cancel_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        return await stops.cancel(ex, symbol, client_order_id)

    async def check_keys(self, ex: Any) -> None:
        await ex.private_get_account({"omitZeroBalances": "true"})  # weight 20, no market load
