"""The public half of FakeBybit: Bybit's v5 envelope and error body, server time, instruments (spot and
USDT perpetual, `category=spot|linear`) and tickers, the endpoints read without a key. Spot listings
are FakeVenue's; perpetuals (same venue id, e.g. BTCUSDT, in category linear) are kept beside them.
FakeBybit (fake_bybit.py) adds the signed endpoints. Written from Bybit's v5 docs (market/time,
market/instrument, market/tickers) and what ccxt 4.5.90's bybit.py reads from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from aiohttp import web

from bridge.sim.fake_venue import (
    DEFAULT_TICK,
    MIN_NOTIONAL,
    ApiError,
    FakeVenue,
    Listing,
    book_quote,
    fmt_num,
    json_response,
)

Category = Literal["spot", "linear"]
CATEGORIES: tuple[Category, ...] = ("spot", "linear")
# Bybit's instrument status for a market that trades (FakeVenue's listings say TRADING)
_STATUS = {"TRADING": "Trading", "PRELAUNCH": "PreLaunch", "BREAK": "Closed"}


def envelope(result: Any, now_ms: int) -> dict[str, Any]:
    """Bybit's v5 answer around `result`: retCode 0, retMsg OK, the server time."""
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms}


class BybitPublicApi(FakeVenue):
    """FakeVenue with Bybit's public v5 endpoints and perpetual listings. Subclassed by FakeBybit."""

    # spot: retCode 170121 "Invalid symbol." (what Bybit's order endpoint answers on spot)
    _UNKNOWN_SYMBOL = (200, 170121, "Invalid symbol.")

    def __init__(
        self,
        *,
        api_key: str,
        secret: str,
        markets: Iterable[tuple[str, str, float]],
        perps: Iterable[tuple[str, str, float]],
        host: str,
        port: int,
    ) -> None:
        self._perps: dict[str, Listing] = {}
        super().__init__(api_key=api_key, secret=secret, markets=markets, host=host, port=port)
        for base, quote, price in perps:
            self.add_perp(base, quote, price=price)

    # ----- listings -----

    def add_perp(
        self,
        base: str,
        quote: str = "USDT",
        *,
        price: float,
        status: str = "TRADING",
        tick_size: float = DEFAULT_TICK,
        step_size: float = DEFAULT_TICK,
        depth: float | None = None,
    ) -> str:
        """List a USDT perpetual (category linear) or change one. Returns its venue id ("BTCUSDT", the
        same as the spot market's: the category tells them apart)."""
        listing = Listing(base.upper(), quote.upper(), price, status, tick_size, step_size, depth)
        self._perps[listing.symbol] = listing
        self._markets_changed()
        return listing.symbol

    def delist(self, symbol: str) -> None:
        """Stop listing a market, by unified symbol ("ABC/USDT", or "ABC/USDT:USDT" for the perpetual):
        Bybit then answers its orders as an unknown symbol."""
        venue_id = symbol.split(":")[0].replace("/", "")
        (self._perps if ":" in symbol else self._listings).pop(venue_id, None)
        self._markets_changed()

    def _market(self, category: str | None, symbol: str | None) -> Listing:
        """The listing a request names by category and venue id; Bybit's error when there is none."""
        if category == "spot":
            return self._listing(symbol)
        if category == "linear":
            listing = self._perps.get(symbol or "")
            if listing is None:
                raise ApiError(200, 10001, "params error: symbol invalid")
            return listing
        raise ApiError(200, 10001, "Illegal category")

    def _listings_of(self, category: Category) -> list[Listing]:
        return list((self._listings if category == "spot" else self._perps).values())

    @staticmethod
    def _category(request: web.Request) -> Category:
        category = request.query.get("category")
        if category not in CATEGORIES:
            raise ApiError(200, 10001, "Illegal category")
        return "spot" if category == "spot" else "linear"

    # ----- FakeVenue hooks -----

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v5/market/time", self._time)
        router.add_get("/v5/market/instruments-info", self._instruments)
        router.add_get("/v5/market/tickers", self._tickers)

    def _error_response(self, exc: ApiError) -> web.Response:
        body = {
            "retCode": exc.code,
            "retMsg": exc.msg,
            "result": {},
            "retExtInfo": {},
            "time": self._now_ms(),
        }
        return json_response(body, status=exc.status, headers=exc.headers)

    def _ok(self, result: Any) -> web.Response:
        return json_response(envelope(result, self._now_ms()))

    # ----- endpoints -----

    async def _time(self, request: web.Request) -> web.Response:
        now_ns = self._now_ms() * 1_000_000
        return self._ok({"timeSecond": str(now_ns // 1_000_000_000), "timeNano": str(now_ns)})

    async def _instruments(self, request: web.Request) -> web.Response:
        """GET /v5/market/instruments-info: one category's instruments, or one symbol's (an empty list
        when it is not listed). `status` filters (ccxt asks linear for PreLaunch separately)."""
        category = self._category(request)
        listings = self._listings_of(category)
        if "symbol" in request.query:
            listings = [x for x in listings if x.symbol == request.query["symbol"]]
        wanted = request.query.get("status")
        listings = [x for x in listings if wanted is None or _STATUS.get(x.status, "Closed") == wanted]
        if wanted is None:  # without `status`, Bybit leaves pre-launch instruments out
            listings = [x for x in listings if x.status != "PRELAUNCH"]
        info = self._spot_info if category == "spot" else self._perp_info
        return self._ok({"category": category, "list": [info(x) for x in listings], "nextPageCursor": ""})

    @staticmethod
    def _spot_info(listing: Listing) -> dict[str, Any]:
        return {
            "symbol": listing.symbol,
            "baseCoin": listing.base,
            "quoteCoin": listing.quote,
            "innovation": "0",
            "status": _STATUS.get(listing.status, "Closed"),
            "marginTrading": "none",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": fmt_num(listing.step_size),
                "quotePrecision": fmt_num(DEFAULT_TICK),
                "minOrderQty": fmt_num(listing.step_size),
                "maxOrderQty": "9000000",
                "minOrderAmt": fmt_num(MIN_NOTIONAL),
                "maxOrderAmt": "9000000",
            },
            "priceFilter": {"tickSize": fmt_num(listing.tick_size)},
            "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
        }

    def _perp_info(self, listing: Listing) -> dict[str, Any]:
        return {
            "symbol": listing.symbol,
            "contractType": "LinearPerpetual",
            "status": _STATUS.get(listing.status, "Closed"),
            "baseCoin": listing.base,
            "quoteCoin": listing.quote,
            "settleCoin": listing.quote,
            "launchTime": str(self._now_ms() - 86_400_000),
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": "8",
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "50.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": fmt_num(listing.tick_size),
                "maxPrice": "1999999.00000000",
                "tickSize": fmt_num(listing.tick_size),
            },
            "lotSizeFilter": {
                "maxOrderQty": "9000000",
                "minOrderQty": fmt_num(listing.step_size),
                "qtyStep": fmt_num(listing.step_size),
                "postOnlyMaxOrderQty": "9000000",
                "maxMktOrderQty": "9000000",
                "minNotionalValue": fmt_num(MIN_NOTIONAL),
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "copyTrading": "none",
            "isPreListing": listing.status == "PRELAUNCH",
        }

    async def _tickers(self, request: web.Request) -> web.Response:
        """GET /v5/market/tickers: every instrument of a category, or one (retCode 10001 "Not supported
        symbols" for one that is not listed). Best bid/ask are `spread` apart around the price."""
        category = self._category(request)
        if "symbol" in request.query:
            symbol = request.query["symbol"]
            listing = next((x for x in self._listings_of(category) if x.symbol == symbol), None)
            if listing is None:
                raise ApiError(200, 10001, "Not supported symbols")
            listings = [listing]
        else:
            listings = self._listings_of(category)
        return self._ok({"category": category, "list": [self._ticker(x, category) for x in listings]})

    def _ticker(self, listing: Listing, category: Category) -> dict[str, Any]:
        trading = listing.status == "TRADING"
        bid, ask = book_quote(listing, self.spread) if trading else (0.0, 0.0)
        size = fmt_num((1_000_000.0 if listing.depth is None else listing.depth) if trading else 0.0)
        price = fmt_num(listing.price)
        ticker: dict[str, Any] = {
            "symbol": listing.symbol,
            "bid1Price": fmt_num(bid),
            "bid1Size": size,
            "ask1Price": fmt_num(ask),
            "ask1Size": size,
            "lastPrice": price,
            "prevPrice24h": price,
            "price24hPcnt": "0",
            "highPrice24h": price,
            "lowPrice24h": price,
            "turnover24h": "0",
            "volume24h": "0",
        }
        if category == "linear":  # ccxt tells a contract ticker by its openInterestValue
            ticker.update(
                markPrice=price,
                indexPrice=price,
                openInterest="0",
                openInterestValue="0",
                fundingRate="0.0001",
                nextFundingTime=str(self._now_ms() + 3_600_000),
            )
        return ticker
