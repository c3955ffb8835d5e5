"""The public half of FakeOkx and OKX's envelope: the signature check, instruments (spot and USDT perpetual swaps), server time, tickers, and
OKX's error body. FakeOkx (fake_okx.py) adds the signed endpoints: account, orders, algo orders.

Written from OKX's v5 REST docs (www.okx.com/docs-v5/en/, "Public data" and "Market data") and the
requests ccxt 4.5.90 builds (ccxt/async_support/okx.py): every answer is `{"code": "0", "msg": "",
"data": [...]}`; an error is `{"code": "<OKX code>", "msg": ..., "data": []}` with HTTP 200 for
business errors, 401 for authentication, 429 for the rate limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from bridge.sim.fake_venue import (
    DEFAULT_TICK,
    ApiError,
    FakeVenue,
    Listing,
    book_quote,
    fmt_num,
    json_response,
)

# The perpetual swaps FakeOkx lists by default: (base, price, contract value in base units). OKX's
# BTC-USDT-SWAP contract is 0.01 BTC and ETH-USDT-SWAP 0.1 ETH (its instruments endpoint, ctVal).
DEFAULT_SWAPS: tuple[tuple[str, float, float], ...] = (("BTC", 60_000.0, 0.01), ("ETH", 3_000.0, 0.1))
SWAP_QUOTE = "USDT"
# OKX refuses a signed request whose OK-ACCESS-TIMESTAMP is more than 30 s from its clock (50102)
TIMESTAMP_WINDOW_MS = 30_000


@dataclass
class OkxListing(Listing):
    """A listing under OKX's instrument id: "BTC-USDT" (spot) or "BTC-USDT-SWAP" (USDT-margined
    perpetual, sized in contracts of `contract_value` base units)."""

    swap: bool = False
    contract_value: float = 1.0
    max_leverage: int = 50

    @property
    def symbol(self) -> str:
        return f"{self.base}-{self.quote}-SWAP" if self.swap else f"{self.base}-{self.quote}"

    @property
    def inst_type(self) -> str:
        return "SWAP" if self.swap else "SPOT"


def inst_id(symbol: str) -> str:
    """OKX's instrument id for a unified symbol ("BTC/USDT" -> "BTC-USDT", "BTC/USDT:USDT" ->
    "BTC-USDT-SWAP"); an instrument id passes through."""
    if "/" not in symbol:
        return symbol
    pair, _, settle = symbol.partition(":")
    return pair.replace("/", "-") + ("-SWAP" if settle else "")


class OkxPublicApi(FakeVenue):
    """FakeVenue with OKX's public REST endpoints. Subclassed by FakeOkx."""

    _UNKNOWN_SYMBOL = (200, 51001, "Instrument ID does not exist")
    passphrase: str

    # ----- listings -----

    def add_market(
        self,
        base: str,
        quote: str,
        *,
        price: float,
        status: str = "TRADING",
        tick_size: float = DEFAULT_TICK,
        step_size: float = DEFAULT_TICK,
        depth: float | None = None,
        swap: bool = False,
        contract_value: float = 1.0,
    ) -> str:
        """List a spot market, or with `swap` a USDT perpetual whose contracts are `contract_value` base
        units each (its `step_size` then counts contracts). Returns OKX's instrument id. A status other
        than TRADING is OKX's state "suspend"."""
        listing = OkxListing(
            base.upper(),
            quote.upper(),
            price,
            status,
            tick_size,
            step_size,
            depth,
            swap=swap,
            contract_value=contract_value,
        )
        self._listings[listing.symbol] = listing
        self._markets_changed()
        return listing.symbol

    def set_price(self, symbol: str, price: float) -> None:
        """As FakeVenue.set_price, by unified symbol ("BTC/USDT:USDT") or instrument id."""
        super().set_price(inst_id(symbol), price)

    def open_orders(self, symbol: str) -> list[Any]:
        return super().open_orders(inst_id(symbol))

    def move_price_on_next_order(self, symbol: str, price: float) -> None:
        super().move_price_on_next_order(inst_id(symbol), price)

    def _okx_listing(self, inst: str | None) -> OkxListing:
        listing = self._listing(inst)
        assert isinstance(listing, OkxListing)
        return listing

    # ----- FakeVenue hooks -----

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v5/public/time", self._time)
        router.add_get("/api/v5/public/instruments", self._instruments)
        router.add_get("/api/v5/market/tickers", self._tickers)
        router.add_get("/api/v5/market/ticker", self._ticker_one)

    def _error_response(self, exc: ApiError) -> web.Response:
        return json_response(
            {"code": str(exc.code), "msg": exc.msg, "data": []}, status=exc.status, headers=exc.headers
        )

    def ok(self, data: list[dict[str, Any]]) -> web.Response:
        return json_response({"code": "0", "msg": "", "data": data})

    # ----- authentication -----

    def _authenticate(self, request: web.Request, body: str) -> None:
        """Check key, passphrase, timestamp and signature the way OKX does (401 with its code)."""
        headers = request.headers
        key, passphrase = headers.get("OK-ACCESS-KEY"), headers.get("OK-ACCESS-PASSPHRASE")
        stamp, signature = headers.get("OK-ACCESS-TIMESTAMP"), headers.get("OK-ACCESS-SIGN")
        if not key:
            raise ApiError(401, 50103, 'Request header "OK-ACCESS-KEY" cannot be empty.')
        if key != self.api_key:
            raise ApiError(401, 50111, "Invalid OK-ACCESS-KEY.")
        if not passphrase:
            raise ApiError(401, 50104, 'Request header "OK-ACCESS-PASSPHRASE" cannot be empty.')
        if not hmac.compare_digest(passphrase, self.passphrase):
            raise ApiError(401, 50105, 'Request header "OK-ACCESS-PASSPHRASE" incorrect.')
        if not stamp:
            raise ApiError(401, 50107, 'Request header "OK-ACCESS-TIMESTAMP" cannot be empty.')
        try:
            stamp_ms = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            raise ApiError(401, 50112, "Invalid OK-ACCESS-TIMESTAMP.") from None
        if abs(self._now_ms() - stamp_ms) > TIMESTAMP_WINDOW_MS:
            raise ApiError(401, 50102, "Timestamp request expired.")
        if not signature:
            raise ApiError(401, 50106, 'Request header "OK-ACCESS-SIGN" cannot be empty.')
        payload = stamp + request.method + request.raw_path + body
        expected = base64.b64encode(
            hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(signature, expected):
            raise ApiError(401, 50113, "Invalid Sign")

    @staticmethod
    def _json_body(body: str) -> Any:
        try:
            return orjson.loads(body or "{}")
        except orjson.JSONDecodeError:
            raise ApiError(400, 50002, "JSON syntax error") from None

    # ----- endpoints -----

    async def _time(self, request: web.Request) -> web.Response:
        return self.ok([{"ts": str(self._now_ms())}])

    def _of_type(self, request: web.Request) -> list[OkxListing]:
        inst_type = request.query.get("instType")
        if inst_type not in ("SPOT", "SWAP", "FUTURES", "OPTION", "MARGIN"):
            raise ApiError(200, 51000, "Parameter instType error")
        listings = [item for item in self._listings.values() if isinstance(item, OkxListing)]
        return [item for item in listings if item.inst_type == inst_type]

    async def _instruments(self, request: web.Request) -> web.Response:
        """GET /api/v5/public/instruments?instType=SPOT|SWAP[&instId=]: FUTURES and OPTION list none."""
        listings = self._of_type(request)
        wanted = request.query.get("instId")
        if wanted is not None:
            listings = [item for item in listings if item.symbol == wanted]
        return self.ok([self._instrument(item) for item in listings])

    def _instrument(self, listing: OkxListing) -> dict[str, Any]:
        swap = listing.swap
        return {
            "instType": listing.inst_type,
            "instId": listing.symbol,
            "uly": f"{listing.base}-{listing.quote}" if swap else "",
            "instFamily": f"{listing.base}-{listing.quote}" if swap else "",
            "baseCcy": "" if swap else listing.base,
            "quoteCcy": "" if swap else listing.quote,
            "settleCcy": listing.quote if swap else "",
            "ctVal": fmt_num(listing.contract_value) if swap else "",
            "ctMult": "1" if swap else "",
            "ctValCcy": listing.base if swap else "",
            "ctType": "linear" if swap else "",
            "optType": "",
            "stk": "",
            "listTime": "1600000000000",
            "expTime": "",
            "lever": str(listing.max_leverage) if swap else "10",
            "tickSz": fmt_num(listing.tick_size),
            "lotSz": fmt_num(listing.step_size),
            "minSz": fmt_num(listing.step_size),
            "maxLmtSz": "9999999999",
            "maxMktSz": "1000000",
            "alias": "",
            "state": "live" if listing.status == "TRADING" else "suspend",
            "category": "1",
            "ruleType": "normal",
        }

    async def _tickers(self, request: web.Request) -> web.Response:
        return self.ok([self._ticker(item) for item in self._of_type(request)])

    async def _ticker_one(self, request: web.Request) -> web.Response:
        return self.ok([self._ticker(self._okx_listing(request.query.get("instId")))])

    def _ticker(self, listing: OkxListing) -> dict[str, Any]:
        """Last price, best bid/ask `spread` apart around it (empty while not trading)."""
        trading = listing.status == "TRADING"
        bid, ask = book_quote(listing, self.spread) if trading else (0.0, 0.0)
        size = "1000000" if listing.depth is None else fmt_num(listing.depth)
        price = fmt_num(listing.price)
        return {
            "instType": listing.inst_type,
            "instId": listing.symbol,
            "last": price,
            "lastSz": "1",
            "askPx": fmt_num(ask) if trading else "",
            "askSz": size if trading else "",
            "bidPx": fmt_num(bid) if trading else "",
            "bidSz": size if trading else "",
            "open24h": price,
            "high24h": price,
            "low24h": price,
            "volCcy24h": "0",
            "vol24h": "0",
            "sodUtc0": price,
            "sodUtc8": price,
            "ts": str(self._now_ms()),
        }
