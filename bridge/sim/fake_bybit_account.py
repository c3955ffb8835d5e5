"""The account half of FakeBybit: Bybit's v5 request signing (HMAC-SHA256 of timestamp + key +
recvWindow + query or body, in X-BAPI-* headers; retCode 10003/10004/10002 for a bad key, signature or
timestamp), the key and account info ccxt reads to tell a unified account, the unified wallet balance,
the account's margin mode, and perpetual positions (one per symbol in one-way mode, two in hedge mode)
with their leverage. FakeBybit (fake_bybit.py) adds the orders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import orjson
from aiohttp import web

from bridge.sim.fake_bybit_orders import params_error
from bridge.sim.fake_bybit_public import BybitPublicApi
from bridge.sim.fake_venue import ApiError, FaultKind, Listing, signature_ok, timestamp_problem
from bridge.sim.fake_wallet import Wallet

DEFAULT_LEVERAGE = 10
_API_KEYS = ("spot", "futures", "v2", "public", "private")  # every urls.api key of ccxt's bybit


class BybitAccountApi(BybitPublicApi):
    """BybitPublicApi with the signed account and position endpoints. Subclassed by FakeBybit.

    `balances` (the unified wallet, per coin) is what tests set; `hedge_mode` puts perpetuals in
    two-way mode; `margin_mode` is the account's (REGULAR_MARGIN, ISOLATED_MARGIN, PORTFOLIO_MARGIN);
    `leverage` and `positions` are per perpetual venue id."""

    _FAULT_ERRORS: ClassVar[Mapping[FaultKind, tuple[int, int, str]]] = {
        "insufficient_balance": (200, 170131, "Insufficient balance."),
        "min_notional": (200, 170140, "Order value exceeded lower limit."),
        "rate_limited": (200, 10006, "Too many visits!"),
        "server_error_after": (200, 10016, "Internal System Error."),
        "timestamp": (200, 10002, "invalid request, please check your server timestamp or recv_window param"),
    }

    def __init__(
        self,
        *,
        api_key: str,
        secret: str,
        markets: Iterable[tuple[str, str, float]],
        perps: Iterable[tuple[str, str, float]],
        host: str,
        port: int,
        track_balances: bool,
    ) -> None:
        self.balances: dict[str, float] = {"USDT": 100_000.0}
        self.track_balances = track_balances
        self.wallet = Wallet(self.balances)
        self.hedge_mode = False
        self.margin_mode = "REGULAR_MARGIN"
        self.read_only_key = False
        self.leverage: dict[str, float] = {}  # perpetual venue id -> leverage (default DEFAULT_LEVERAGE)
        self.positions: dict[str, tuple[float, float]] = {}  # perpetual id -> (signed size, entry price)
        super().__init__(api_key=api_key, secret=secret, markets=markets, perps=perps, host=host, port=port)

    def ccxt_config(self) -> dict[str, Any]:
        """The dict to deep-merge into ccxt's bybit config so every API goes to this server."""
        urls = dict.fromkeys(_API_KEYS, self.url)
        return {"urls": {"api": urls, "test": dict(urls), "demotrading": dict(urls)}, "timeout_on_exit": 0}

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_get("/v5/user/query-api", self._query_api)
        router.add_get("/v5/account/info", self._account_info)
        router.add_get("/v5/asset/coin/query-info", self._coin_info)
        router.add_get("/v5/account/wallet-balance", self._wallet_balance)
        router.add_post("/v5/account/set-margin-mode", self._set_margin_mode)
        router.add_get("/v5/position/list", self._position_list)
        router.add_post("/v5/position/set-leverage", self._set_leverage)

    # ----- authentication -----

    def _authenticate(self, request: web.Request, payload: str) -> None:
        """Bybit v5 HMAC: X-BAPI-SIGN = hex HMAC-SHA256(secret, timestamp + key + recvWindow + payload),
        payload being the query string (GET) or the body (POST)."""
        headers = request.headers
        key = headers.get("X-BAPI-API-KEY")
        if key != self.api_key:
            raise ApiError(200, 10003, "API key is invalid.")
        stamp, window = headers.get("X-BAPI-TIMESTAMP", ""), headers.get("X-BAPI-RECV-WINDOW", "5000")
        if not signature_ok(self.secret, stamp + key + window + payload, headers.get("X-BAPI-SIGN", "")):
            raise ApiError(200, 10004, "error sign! origin_string[...]")
        try:
            problem = timestamp_problem(int(stamp), self._now_ms(), int(window))
        except ValueError:
            raise params_error("timestamp invalid") from None
        if problem is not None:
            raise ApiError(*self._FAULT_ERRORS["timestamp"])

    def _signed_query(self, request: web.Request) -> Mapping[str, str]:
        _, _, query = request.raw_path.partition("?")
        self._authenticate(request, query)
        return request.query

    async def _signed_body(self, request: web.Request) -> dict[str, Any]:
        text = await request.text()
        self._authenticate(request, text)
        return self._json(text)

    @staticmethod
    def _json(text: str) -> dict[str, Any]:
        try:
            body = orjson.loads(text or "{}")
        except orjson.JSONDecodeError:
            raise ApiError(200, 10001, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(200, 10001, "request body is not a JSON object")
        return body

    # ----- account -----

    async def _query_api(self, request: web.Request) -> web.Response:
        self._signed_query(request)
        return self._ok(
            {
                "id": "1",
                "note": "fake",
                "apiKey": self.api_key,
                "readOnly": 1 if self.read_only_key else 0,
                "secret": "",
                "permissions": {"ContractTrade": ["Order", "Position"], "Spot": ["SpotTrade"]},
                "ips": ["*"],
                "type": 1,
                "unified": 0,
                "uta": 1,
                "userID": 1,
                "isMaster": True,
            }
        )

    async def _account_info(self, request: web.Request) -> web.Response:
        self._signed_query(request)
        now = str(self._now_ms())
        return self._ok({"unifiedMarginStatus": 5, "marginMode": self.margin_mode, "updatedTime": now})

    async def _coin_info(self, request: web.Request) -> web.Response:
        """GET /v5/asset/coin/query-info: ccxt's bybit load_markets asks it whenever keys are set."""
        self._signed_query(request)
        coins = sorted({x.base for x in [*self._listings.values(), *self._perps.values()]} | {"USDT"})
        return self._ok(
            {"rows": [{"name": c, "coin": c, "remainAmount": "1000000", "chains": []} for c in coins]}
        )

    async def _wallet_balance(self, request: web.Request) -> web.Response:
        query = self._signed_query(request)
        if query.get("accountType") != "UNIFIED":
            raise params_error("accountType only support UNIFIED")
        coins = []
        for coin in sorted({*self.balances, *self.wallet.locked}):
            free, locked = self.balances.get(coin, 0.0), self.wallet.locked.get(coin, 0.0)
            margin = self._position_margin() if coin == "USDT" else 0.0
            coins.append(
                {
                    "coin": coin,
                    "walletBalance": str(free + locked),
                    "locked": str(locked),
                    "totalPositionIM": str(margin),
                    "totalOrderIM": "0",
                    "availableToWithdraw": "",  # deprecated on UTA 2.0: ccxt computes free from the rest
                }
            )
        return self._ok({"list": [{"accountType": "UNIFIED", "coin": coins}]})

    async def _set_margin_mode(self, request: web.Request) -> web.Response:
        body = await self._signed_body(request)
        mode = body.get("setMarginMode")
        if mode not in ("ISOLATED_MARGIN", "REGULAR_MARGIN", "PORTFOLIO_MARGIN"):
            raise params_error("setMarginMode invalid")
        self.margin_mode = mode
        return self._ok({"reasons": []})

    # ----- positions -----

    def _perp_listing(self, symbol: str) -> Listing:
        return self._market("linear", symbol.split(":")[0].replace("/", ""))

    def _position_margin(self) -> float:
        return sum(
            abs(size) * entry / self.leverage.get(s, DEFAULT_LEVERAGE)
            for s, (size, entry) in self.positions.items()
        )

    async def _position_list(self, request: web.Request) -> web.Response:
        """One entry per symbol asked for (size 0 included; two, positionIdx 1 and 2, in hedge mode); by
        settleCoin, the open positions only."""
        query = self._signed_query(request)
        if query.get("category") != "linear":
            raise ApiError(200, 10001, "Illegal category")
        if "symbol" in query:
            symbols = [self._market("linear", query["symbol"]).symbol]
        elif query.get("settleCoin") or query.get("baseCoin"):
            symbols = [s for s, (size, _) in self.positions.items() if size != 0]
        else:
            raise params_error("symbol or settleCoin is required")
        entries = [entry for symbol in symbols for entry in self._position_entries(symbol)]
        return self._ok({"category": "linear", "list": entries, "nextPageCursor": ""})

    def _position_entries(self, symbol: str) -> list[dict[str, Any]]:
        size, entry = self.positions.get(symbol, (0.0, 0.0))
        leverage = self.leverage.get(symbol, DEFAULT_LEVERAGE)
        price = self._perps[symbol].price
        sides = (
            [(1, "Buy", max(size, 0.0)), (2, "Sell", max(-size, 0.0))]
            if self.hedge_mode
            else [(0, "Buy" if size > 0 else "Sell" if size < 0 else "", abs(size))]
        )
        return [
            {
                "positionIdx": idx,
                "symbol": symbol,
                "side": side if amount else "",
                "size": str(amount),
                "avgPrice": str(entry if amount else 0),
                "positionValue": str(amount * entry),
                "leverage": str(leverage),
                "markPrice": str(price),
                "tradeMode": 1 if self.margin_mode == "ISOLATED_MARGIN" else 0,
                "positionStatus": "Normal",
                "unrealisedPnl": str(amount * (price - entry) * (1 if side == "Buy" else -1)),
                "positionIM": str(amount * entry / leverage),
                "createdTime": str(self._now_ms()),
                "updatedTime": str(self._now_ms()),
            }
            for idx, side, amount in sides
        ]

    async def _set_leverage(self, request: web.Request) -> web.Response:
        body = await self._signed_body(request)
        if body.get("category") != "linear":
            raise ApiError(200, 10001, "Illegal category")
        listing = self._market("linear", body.get("symbol"))
        buy, sell = body.get("buyLeverage"), body.get("sellLeverage")
        try:
            leverage = float(buy or "")
        except ValueError:
            raise params_error("buyLeverage invalid") from None
        if buy != sell and not self.hedge_mode:
            raise params_error("buyLeverage must be equal to sellLeverage in one-way mode")
        if not 1 <= leverage <= 50:
            raise params_error("leverage invalid")
        if self.leverage.get(listing.symbol, DEFAULT_LEVERAGE) == leverage:
            raise ApiError(200, 110043, "Set leverage not modified")
        self.leverage[listing.symbol] = leverage
        return self._ok({})

    def _move_position(self, symbol: str, delta: float, price: float) -> None:
        size, entry = self.positions.get(symbol, (0.0, 0.0))
        new = round(size + delta, 8)
        if size == 0 or (size > 0) == (delta > 0):  # opening or adding: average the entry
            entry = (abs(size) * entry + abs(delta) * price) / abs(new) if new else 0.0
        else:  # reducing: realise the profit or loss of what closed
            closed = min(abs(delta), abs(size))
            pnl = closed * (price - entry) * (1 if size > 0 else -1)
            self.balances["USDT"] = round(self.balances.get("USDT", 0.0) + pnl, 8)
            entry = entry if new != 0 and (new > 0) == (size > 0) else (price if new else 0.0)
        self.positions[symbol] = (new, entry)
