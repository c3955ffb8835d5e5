"""The public half of FakeBinance: exchange info (each listing's filters and order types), tickers and
best bid/ask, the endpoints a client reads without a key, and Binance's error body. FakeBinance
(fake_binance.py) adds the signed endpoints: account, orders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from bridge.sim.fake_venue import (
    DEFAULT_MARKETS,
    MIN_NOTIONAL,
    ApiError,
    FakeVenue,
    Listing,
    book_quote,
    fmt_num,
    json_response,
)

# What Binance lists for most spot symbols today (STOP_LOSS and TAKE_PROFIT at market included).
ORDER_TYPES = (
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)

# Quotes of the generated markets (see `many_markets`), in turn: real Binance spot lists most bases
# against several quotes, so `count` markets have about count / 2 base currencies.
_GENERATED_QUOTES = ("USDT", "BTC")


def many_markets(count: int) -> tuple[tuple[str, str, float], ...]:
    """DEFAULT_MARKETS plus generated ones up to `count` markets in all (at least the defaults), for
    `FakeBinance(markets=many_markets(3000))`: a market list as large as Binance's spot one, e.g. to
    measure what loading and refreshing it costs. Generated bases are `G0000`, `G0001`, ..."""
    generated = (
        (f"G{i // len(_GENERATED_QUOTES):04d}", _GENERATED_QUOTES[i % len(_GENERATED_QUOTES)], 1.0 + i % 97)
        for i in range(max(count - len(DEFAULT_MARKETS), 0))
    )
    return (*DEFAULT_MARKETS, *generated)


class BinancePublicApi(FakeVenue):
    """FakeVenue with Binance's public REST endpoints. Subclassed by FakeBinance."""

    _UNKNOWN_SYMBOL = (400, -1121, "Invalid symbol.")
    _exchange_info: bytes | None = None  # cached: the big response is rebuilt only when a listing changes
    _exchange_info_held: asyncio.Event | None = None  # while set and not released: full answers wait

    def hold_exchange_info(self) -> None:
        """Make full GET exchangeInfo requests (no `symbol`) wait for `release_exchange_info()`, then answer
        the listings as they stood when the request arrived: lets a test act while a market load is in
        flight. Targeted ones (`symbol=`) still answer at once."""
        self._exchange_info_held = asyncio.Event()

    def release_exchange_info(self) -> None:
        """Answer the held full exchangeInfo requests, and the next ones at once."""
        held, self._exchange_info_held = self._exchange_info_held, None
        if held is not None:
            held.set()

    def exchange_info(self) -> dict[str, Any]:
        """The full GET /api/v3/exchangeInfo body, e.g. to record it for a mocked-HTTP test."""
        return self._exchange_info_body(self._listings.values())

    async def stop(self) -> None:
        self.release_exchange_info()  # a held request must not keep the runner's cleanup waiting
        await super().stop()

    # ----- FakeVenue hooks -----

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v3/ping", self._ping)
        router.add_get("/api/v3/time", self._time)
        router.add_get("/api/v3/exchangeInfo", self._exchange_info_handler)
        router.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        router.add_get("/api/v3/ticker/price", self._ticker_price)
        router.add_get("/api/v3/ticker/bookTicker", self._book_ticker)

    def _error_response(self, exc: ApiError) -> web.Response:
        return json_response({"code": exc.code, "msg": exc.msg}, status=exc.status, headers=exc.headers)

    def _markets_changed(self) -> None:
        self._exchange_info = None

    # ----- endpoints -----

    async def _ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self._now_ms()})

    async def _exchange_info_handler(self, request: web.Request) -> web.Response:
        wanted = self._requested_symbols(request)
        if wanted is None:
            if self._exchange_info is None:
                self._exchange_info = orjson.dumps(self._exchange_info_body(self._listings.values()))
            body, held = self._exchange_info, self._exchange_info_held
            if held is not None:
                await held.wait()  # then answers the listings as they were when the request arrived
            return web.Response(body=body, content_type="application/json")
        return json_response(self._exchange_info_body([self._listing(s) for s in wanted]))

    @staticmethod
    def _requested_symbols(request: web.Request) -> list[str] | None:
        if "symbol" in request.query:
            return [request.query["symbol"]]
        if "symbols" in request.query:
            try:
                symbols = orjson.loads(request.query["symbols"])
            except orjson.JSONDecodeError:
                raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
            return [str(s) for s in symbols]
        return None

    def _exchange_info_body(self, listings: Iterable[Listing]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(listing) for listing in listings],
        }

    @staticmethod
    def _symbol_info(listing: Listing) -> dict[str, Any]:
        return {
            "symbol": listing.symbol,
            "status": listing.status,
            "baseAsset": listing.base,
            "baseAssetPrecision": 8,
            "quoteAsset": listing.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": list(ORDER_TYPES),
            "icebergAllowed": True,
            "ocoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": fmt_num(listing.tick_size),
                    "maxPrice": "1000000.00000000",
                    "tickSize": fmt_num(listing.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": fmt_num(listing.step_size),
                    "maxQty": "9000000.00000000",
                    "stepSize": fmt_num(listing.step_size),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": fmt_num(MIN_NOTIONAL),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        wanted = self._requested_symbols(request)
        if wanted is not None and "symbol" in request.query:
            return json_response(self._ticker(self._listing(wanted[0])))
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return json_response([self._ticker(listing) for listing in listings])

    def _ticker(self, listing: Listing) -> dict[str, Any]:
        now = self._now_ms()
        price = fmt_num(listing.price)
        return {
            "symbol": listing.symbol,
            "priceChange": "0.00000000",
            "priceChangePercent": "0.000",
            "weightedAvgPrice": price,
            "prevClosePrice": price,
            "lastPrice": price,
            "lastQty": "1.00000000",
            "bidPrice": price,
            "bidQty": "1.00000000",
            "askPrice": price,
            "askQty": "1.00000000",
            "openPrice": price,
            "highPrice": price,
            "lowPrice": price,
            "volume": "0.00000000",
            "quoteVolume": "0.00000000",
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1,
            "count": 1,
        }

    async def _ticker_price(self, request: web.Request) -> web.Response:
        wanted = self._requested_symbols(request)
        if wanted is not None and "symbol" in request.query:
            listing = self._listing(wanted[0])
            return json_response({"symbol": listing.symbol, "price": fmt_num(listing.price)})
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return json_response([{"symbol": item.symbol, "price": fmt_num(item.price)} for item in listings])

    async def _book_ticker(self, request: web.Request) -> web.Response:
        """Best bid/ask: `spread` apart around the price; zeros while a market is not trading (an empty
        book). Public, like Binance's: no key, no signature."""
        wanted = self._requested_symbols(request)
        if wanted is not None and "symbol" in request.query:
            return json_response(self._book_entry(self._listing(wanted[0])))
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return json_response([self._book_entry(listing) for listing in listings])

    def _book_entry(self, listing: Listing) -> dict[str, Any]:
        trading = listing.status == "TRADING"
        bid, ask = book_quote(listing, self.spread) if trading else (0.0, 0.0)
        size = fmt_num((1_000_000.0 if listing.depth is None else listing.depth) if trading else 0.0)
        return {
            "symbol": listing.symbol,
            "bidPrice": fmt_num(bid),
            "bidQty": size,
            "askPrice": fmt_num(ask),
            "askQty": size,
        }
