"""FakeBinanceFutures: FakeBinance (spot) plus enough of Binance's USDⓈ-M futures REST API (/fapi) for real
ccxt 4.5.90 `binance` code on swap markets (`ABC/USDT:USDT`): exchangeInfo, time, bookTicker, 24 h
tickers, account and balance, positionRisk, orders (MARKET, LIMIT IOC/FOK, reduceOnly), look-up and
cancel by origClientOrderId, conditional orders on the algo service (STOP_MARKET / TAKE_PROFIT_MARKET with
reduceOnly or closePosition, by clientAlgoId, as ccxt 4.5.90 sends a swap stop), leverage, marginType and
the position mode (positionSide/dual, read; `dual_side = True` puts the account in hedge mode).

One server speaks both: ccxt's `binance` class with market types spot and linear loads both, as an account
that trades both does. Signatures, timestamps and the injected faults are FakeBinance's. The matching and
the account are in fake_binance_futures_engine.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bridge.sim.fake_binance import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from bridge.sim.fake_binance_futures_engine import MIN_NOTIONAL, AlgoOrder, PerpEngine, PerpOrder
from bridge.sim.fake_venue import DEFAULT_MARKETS, ApiError, Listing, book_quote, fmt_num, json_response

DEFAULT_PERPS: tuple[tuple[str, str, float], ...] = (
    ("BTC", "USDT", 60_000.0),
    ("ETH", "USDT", 3_000.0),
)
PERP_TICK = 0.01
PERP_STEP = 0.001
# What Binance lists for a USDⓈ-M perpetual's orderTypes and timeInForce.
PERP_ORDER_TYPES = (
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
)
_PERPETUAL_DELIVERY_MS = 4133404800000  # Binance's "no delivery" date of a perpetual


class FakeBinanceFutures(FakeBinance):
    """`async with FakeBinanceFutures() as fake:` then pass `fake.ccxt_config()` to ccxt's `binance` with
    `options.fetchMarkets.types` ["spot", "linear"] (or ["linear"]). `fake.perps` is the futures account:
    `wallet`, `positions`, `settings` (leverage, margin type per symbol), `dual_side`."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        markets: Iterable[tuple[str, str, float]] = DEFAULT_MARKETS,
        perps: Iterable[tuple[str, str, float]] = DEFAULT_PERPS,
        host: str = "127.0.0.1",
        port: int = 0,
        wallet: float = 10_000.0,
    ) -> None:
        super().__init__(api_key=api_key, secret=secret, markets=markets, host=host, port=port)
        self.perps = PerpEngine(self._now_ms, wallet=wallet)
        self.algo_requests: list[dict[str, str]] = []  # conditional order requests, as received
        for base, quote, price in perps:
            self.add_perp(base, quote, price=price)

    # ----- helpers for tests -----

    def add_perp(
        self,
        base: str,
        quote: str,
        *,
        price: float,
        status: str = "TRADING",
        tick_size: float = PERP_TICK,
        step_size: float = PERP_STEP,
        depth: float | None = None,
    ) -> str:
        """List (or change) a USDⓈ-M perpetual; its venue id, e.g. "BTCUSDT"."""
        listing = Listing(base.upper(), quote.upper(), price, status, tick_size, step_size, depth)
        self.perps.listings[listing.symbol] = listing
        return listing.symbol

    def set_perp_price(self, symbol: str, price: float) -> None:
        """Move a perpetual's price (venue id "BTCUSDT" or "BTC/USDT:USDT"); resting stops it crosses fill."""
        self.perps.set_price(_venue_id(symbol), price)

    def position_amount(self, symbol: str) -> float:
        """The signed position (long > 0, short < 0) on a perpetual."""
        return self.perps.position(_venue_id(symbol)).amount

    def open_algo_orders(self, symbol: str) -> list[AlgoOrder]:
        venue_id = _venue_id(symbol)
        return [a for a in self.perps.algo_by_id.values() if a.symbol == venue_id and a.open]

    # ----- routes -----

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_get("/fapi/v1/ping", self._ping)
        router.add_get("/fapi/v1/time", self._time)
        router.add_get("/fapi/v1/exchangeInfo", self._fapi_exchange_info)
        router.add_get("/fapi/v1/ticker/bookTicker", self._fapi_book_ticker)
        router.add_get("/fapi/v1/ticker/24hr", self._fapi_ticker_24hr)
        router.add_post("/fapi/v1/order", self._fapi_post_order)
        router.add_get("/fapi/v1/order", self._fapi_get_order)
        router.add_delete("/fapi/v1/order", self._fapi_delete_order)
        router.add_post("/fapi/v1/algoOrder", self._fapi_post_algo)
        router.add_get("/fapi/v1/algoOrder", self._fapi_get_algo)
        router.add_delete("/fapi/v1/algoOrder", self._fapi_delete_algo)
        router.add_post("/fapi/v1/leverage", self._fapi_leverage)
        router.add_post("/fapi/v1/marginType", self._fapi_margin_type)
        router.add_get("/fapi/v1/positionSide/dual", self._fapi_position_mode)
        router.add_get("/fapi/v1/leverageBracket", self._fapi_leverage_brackets)
        for version in ("v2", "v3"):
            router.add_get(f"/fapi/{version}/account", self._fapi_account)
            router.add_get(f"/fapi/{version}/balance", self._fapi_balance)
            router.add_get(f"/fapi/{version}/positionRisk", self._fapi_position_risk)

    async def _signed(self, request: web.Request) -> dict[str, str]:
        return self._authenticate(request, await request.text())

    # ----- public -----

    async def _fapi_exchange_info(self, request: web.Request) -> web.Response:
        symbols = [self._perp_info(listing) for listing in self.perps.listings.values()]
        return json_response(
            {
                "timezone": "UTC",
                "serverTime": self._now_ms(),
                "futuresType": "U_MARGINED",
                "rateLimits": [],
                "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
                "symbols": symbols,
            }
        )

    @staticmethod
    def _perp_info(listing: Listing) -> dict[str, Any]:
        tick, step = fmt_num(listing.tick_size), fmt_num(listing.step_size)
        return {
            "symbol": listing.symbol,
            "pair": listing.symbol,
            "contractType": "PERPETUAL",
            "deliveryDate": _PERPETUAL_DELIVERY_MS,
            "onboardDate": 1569398400000,
            "status": listing.status,
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": listing.base,
            "quoteAsset": listing.quote,
            "marginAsset": listing.quote,
            "pricePrecision": 2,
            "quantityPrecision": 3,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
                {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "120", "stepSize": step},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": fmt_num(MIN_NOTIONAL)},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": "1.0500",
                    "multiplierDown": "0.9500",
                    "multiplierDecimal": "4",
                },
            ],
            "orderTypes": list(PERP_ORDER_TYPES),
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    async def _fapi_book_ticker(self, request: web.Request) -> web.Response:
        if "symbol" in request.query:
            return json_response(self._perp_book(self.perps.listing(request.query["symbol"])))
        return json_response([self._perp_book(listing) for listing in self.perps.listings.values()])

    def _perp_book(self, listing: Listing) -> dict[str, Any]:
        trading = listing.status == "TRADING"
        bid, ask = book_quote(listing, self.spread) if trading else (0.0, 0.0)
        return {
            "symbol": listing.symbol,
            "bidPrice": fmt_num(bid),
            "bidQty": "1000.000",
            "askPrice": fmt_num(ask),
            "askQty": "1000.000",
            "time": self._now_ms(),
            "lastUpdateId": 1,
        }

    async def _fapi_ticker_24hr(self, request: web.Request) -> web.Response:
        if "symbol" in request.query:
            return json_response(self._perp_ticker(self.perps.listing(request.query["symbol"])))
        return json_response([self._perp_ticker(listing) for listing in self.perps.listings.values()])

    def _perp_ticker(self, listing: Listing) -> dict[str, Any]:
        now, price = self._now_ms(), fmt_num(listing.price)
        return {
            "symbol": listing.symbol,
            "priceChange": "0",
            "priceChangePercent": "0",
            "weightedAvgPrice": price,
            "lastPrice": price,
            "lastQty": "1",
            "openPrice": price,
            "highPrice": price,
            "lowPrice": price,
            "volume": "0",
            "quoteVolume": "0",
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1,
            "count": 1,
        }

    # ----- orders -----

    async def _fapi_post_order(self, request: web.Request) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body = await request.text()
        _, _, query = request.raw_path.partition("?")
        await self._receive_order(
            dict(parse_qsl(query)) | dict(parse_qsl(body)), received_ns, received_mono_ns
        )
        params = self._authenticate(request, body)
        fault = self._next_fault()
        self._fail_before(fault)
        order = self.perps.create(params)
        self.executed.append(order.info())
        await self._fail_after(fault)
        if fault == "garbled_after":
            return web.Response(text='{"orderId":', content_type="application/json")
        if fault == "empty_after":
            return json_response({})
        if fault == "not_json_after":
            return web.Response(text="<html><body>OK</body></html>", content_type="text/html")
        return json_response(order.info())

    async def _fapi_get_order(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        self._fail_before(self._next_lookup_fault())
        self.perps.listing(params.get("symbol"))
        order = self.perps.find(params)
        if order is None:
            raise ApiError(400, -2013, "Order does not exist.")
        return json_response(order.info())

    async def _fapi_delete_order(self, request: web.Request) -> web.Response:
        """Every order this fake takes fills or expires at once, so none is ever open to cancel: -2011."""
        params = await self._signed(request)
        self._fail_before(self._next_cancel_fault())
        self.perps.listing(params.get("symbol"))
        self.perps.find(params)
        raise ApiError(400, -2011, "Unknown order sent.")

    async def _fapi_post_algo(self, request: web.Request) -> web.Response:
        body = await request.text()
        params = self._authenticate(request, body)
        self.algo_requests.append(params)
        fault = self._next_fault()
        self._fail_before(fault)
        algo = self.perps.create_algo(params)
        await self._fail_after(fault)
        return json_response(algo.info())

    async def _fapi_get_algo(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        self._fail_before(self._next_lookup_fault())
        algo = self.perps.find_algo(params)
        if algo is None:
            raise ApiError(400, -2013, "Order does not exist.")
        return json_response(algo.info())

    async def _fapi_delete_algo(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        fault = self._next_cancel_fault()
        self._fail_before(fault)
        algo = self.perps.find_algo(params)
        if algo is None or not algo.open:
            raise ApiError(400, -2011, "Unknown order sent.")
        algo.status = "CANCELED"
        await self._fail_after(fault)
        return json_response(
            {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}
        )

    # ----- account -----

    async def _fapi_leverage(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        return json_response(self.perps.set_leverage(params.get("symbol") or "", params.get("leverage")))

    async def _fapi_margin_type(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        return json_response(self.perps.set_margin_type(params.get("symbol") or "", params.get("marginType")))

    async def _fapi_position_mode(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return json_response({"dualSidePosition": self.perps.dual_side})

    async def _fapi_leverage_brackets(self, request: web.Request) -> web.Response:
        """One bracket per symbol (ccxt's fetch_positions loads them first)."""
        await self._signed(request)
        bracket = {
            "bracket": 1,
            "initialLeverage": 125,
            "notionalCap": 1_000_000,
            "notionalFloor": 0,
            "maintMarginRatio": 0.004,
            "cum": 0.0,
        }
        return json_response([{"symbol": s, "brackets": [bracket]} for s in self.perps.listings])

    def _usdt_asset(self) -> dict[str, Any]:
        engine = self.perps
        return {
            "asset": "USDT",
            "walletBalance": fmt_num(engine.wallet),
            "unrealizedProfit": "0.00000000",
            "marginBalance": fmt_num(engine.wallet),
            "maintMargin": "0.00000000",
            "initialMargin": fmt_num(engine.used_margin()),
            "positionInitialMargin": fmt_num(engine.used_margin()),
            "openOrderInitialMargin": "0.00000000",
            "crossWalletBalance": fmt_num(engine.wallet),
            "crossUnPnl": "0.00000000",
            "availableBalance": fmt_num(engine.available()),
            "maxWithdrawAmount": fmt_num(engine.available()),
            "updateTime": self._now_ms(),
        }

    async def _fapi_account(self, request: web.Request) -> web.Response:
        await self._signed(request)
        engine = self.perps
        return json_response(
            {
                "totalInitialMargin": fmt_num(engine.used_margin()),
                "totalWalletBalance": fmt_num(engine.wallet),
                "totalMarginBalance": fmt_num(engine.wallet),
                "availableBalance": fmt_num(engine.available()),
                "maxWithdrawAmount": fmt_num(engine.available()),
                "assets": [self._usdt_asset()],
                "positions": [
                    self._position_entry(s) for s in engine.positions if engine.positions[s].amount
                ],
            }
        )

    async def _fapi_balance(self, request: web.Request) -> web.Response:
        await self._signed(request)
        asset = self._usdt_asset()
        return json_response([{"accountAlias": "fake", "balance": asset["walletBalance"], **asset}])

    async def _fapi_position_risk(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        wanted = params.get("symbol")
        symbols = [wanted] if wanted else [s for s, p in self.perps.positions.items() if p.amount]
        return json_response([self._position_entry(s) for s in symbols])

    def _position_entry(self, symbol: str) -> dict[str, Any]:
        engine = self.perps
        position, setting, listing = engine.position(symbol), engine.setting(symbol), engine.listing(symbol)
        notional = position.amount * listing.price
        return {
            "symbol": symbol,
            "positionSide": "BOTH",
            "positionAmt": fmt_num(position.amount),
            "entryPrice": fmt_num(position.entry_price),
            "breakEvenPrice": fmt_num(position.entry_price),
            "markPrice": fmt_num(listing.price),
            "unRealizedProfit": fmt_num(round(position.amount * (listing.price - position.entry_price), 8)),
            "liquidationPrice": "0",
            "isolatedMargin": fmt_num(
                abs(notional) / setting.leverage if setting.margin_type == "ISOLATED" else 0
            ),
            "notional": fmt_num(notional),
            "marginAsset": "USDT",
            "isolatedWallet": "0",
            "initialMargin": fmt_num(abs(notional) / setting.leverage),
            "maintMargin": "0",
            "positionInitialMargin": fmt_num(abs(notional) / setting.leverage),
            "openOrderInitialMargin": "0",
            "adl": 0,
            "bidNotional": "0",
            "askNotional": "0",
            "leverage": str(setting.leverage),
            "marginType": "isolated" if setting.margin_type == "ISOLATED" else "cross",
            "updateTime": self._now_ms(),
        }


def _venue_id(symbol: str) -> str:
    """ "BTC/USDT:USDT" -> "BTCUSDT"; a venue id is kept."""
    return symbol.split(":", 1)[0].replace("/", "")


__all__ = ["DEFAULT_PERPS", "FakeBinanceFutures", "PerpOrder"]
