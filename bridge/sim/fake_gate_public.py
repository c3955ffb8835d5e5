"""The public half of FakeGate: Gate APIv4's server time, spot currency pairs and USDT perpetual contracts,
tickers, and Gate's error body (`{"label": ..., "message": ...}`). FakeGate (fake_gate.py) adds the
signed endpoints. Every listing is a spot pair `BASE_QUOTE` and, unless listed in `spot_only`, a USDT
perpetual contract of the same name, both at the listing's price.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, ClassVar

from aiohttp import web

from bridge.sim.fake_venue import ApiError, FakeVenue, FaultKind, Listing, book_quote, json_response

API_PREFIX = "/api/v4"
MIN_QUOTE_AMOUNT = 3.0  # Gate spot's usual min_quote_amount (USDT) for a currency pair

# Every urls.api group of ccxt's gate describe() goes to this server (all share /api/v4).
_PUBLIC_GROUPS = ("wallet", "futures", "margin", "delivery", "spot", "options", "sub_accounts", "earn")
_PRIVATE_GROUPS = (
    *("withdrawals", "wallet", "futures", "margin", "delivery", "spot", "options", "subAccounts"),
    *("unified", "rebate", "earn", "account", "loan", "otc"),
)


class GateError(ApiError):
    """An error answered in Gate's shape: HTTP `status`, `label` (Gate's error code) and `message`."""

    def __init__(self, status: int, label: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, 0, message, headers)
        self.label = label


def decimals(step: float) -> int:
    """How many decimals a step has (0.01 -> 2): Gate states precision as a count of decimals."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 8


def num(value: float) -> str:
    """A number as Gate writes it: a decimal string without exponent or trailing zeros."""
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text or "0"


class GatePublicApi(FakeVenue):
    """FakeVenue with Gate's public REST endpoints. Subclassed by FakeGate."""

    _UNKNOWN_SYMBOL: ClassVar[tuple[int, int, str]] = (400, 0, "Invalid currency pair")
    # Gate's answers to each fault (HTTP status, label, message); see FakeGate.
    _GATE_FAULTS: ClassVar[Mapping[FaultKind, tuple[int, str, str]]] = {}
    _FAULT_ERRORS: ClassVar[Mapping[FaultKind, tuple[int, int, str]]] = {}  # unused: Gate has labels

    def __init__(
        self, *, api_key: str, secret: str, markets: Iterable[tuple[str, str, float]], host: str, port: int
    ) -> None:
        self.spot_only: set[str] = set()  # listings ("ABCUSDT") without a perpetual contract
        self.contract_size = 1.0  # quanto_multiplier: base currency per contract
        super().__init__(api_key=api_key, secret=secret, markets=markets, host=host, port=port)

    def ccxt_config(self) -> dict[str, Any]:
        """The dict to deep-merge into ccxt's gate config so every API goes to this server."""
        base = self.url + API_PREFIX
        api = {
            "public": dict.fromkeys(_PUBLIC_GROUPS, base),
            "private": dict.fromkeys(_PRIVATE_GROUPS, base),
        }
        return {"urls": {"api": api, "test": api}, "timeout_on_exit": 0}

    # ----- FakeVenue hooks -----

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        p = API_PREFIX
        router.add_get(p + "/spot/time", self._time)
        router.add_get(p + "/spot/currencies", self._currencies)
        router.add_get(p + "/spot/currency_pairs", self._currency_pairs)
        router.add_get(p + "/margin/currency_pairs", self._margin_pairs)
        router.add_get(p + "/futures/{settle}/contracts", self._contracts)
        router.add_get(p + "/spot/tickers", self._spot_tickers)
        router.add_get(p + "/futures/{settle}/tickers", self._futures_tickers)

    def _error_response(self, exc: ApiError) -> web.Response:
        label = (
            exc.label if isinstance(exc, GateError) else ("NOT_FOUND" if exc.status == 404 else "INTERNAL")
        )
        body = {"label": label, "message": exc.msg}
        return json_response(body, status=exc.status, headers=exc.headers)

    # ----- listings by Gate id -----

    def _pair(self, pair: str | None) -> Listing:
        """The listing of a spot currency pair id ("BTC_USDT"); INVALID_CURRENCY_PAIR if none."""
        listing = self._listings.get((pair or "").replace("_", ""))
        if listing is None or "_" not in (pair or ""):
            raise GateError(400, "INVALID_CURRENCY_PAIR", f"Invalid currency pair {pair}")
        return listing

    def _contract(self, settle: str, name: str | None) -> Listing:
        """The listing of a USDT perpetual contract ("BTC_USDT"); CONTRACT_NOT_FOUND if none."""
        listing = self._listings.get((name or "").replace("_", ""))
        if (
            settle != "usdt"
            or listing is None
            or listing.quote != "USDT"
            or listing.symbol in self.spot_only
            or "_" not in (name or "")
        ):
            raise GateError(400, "CONTRACT_NOT_FOUND", "Contract not found")
        return listing

    def _contracts_listed(self) -> list[Listing]:
        return [x for x in self._listings.values() if x.quote == "USDT" and x.symbol not in self.spot_only]

    @staticmethod
    def gate_id(listing: Listing) -> str:
        return f"{listing.base}_{listing.quote}"

    # ----- endpoints -----

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"server_time": self._now_ms()})

    async def _currencies(self, request: web.Request) -> web.Response:
        """GET /spot/currencies: ccxt's gate load_markets asks for it every time (has fetchCurrencies)."""
        codes = sorted({c for x in self._listings.values() for c in (x.base, x.quote)})
        return json_response(
            [
                {
                    "currency": code,
                    "name": code,
                    "delisted": False,
                    "withdraw_disabled": False,
                    "withdraw_delayed": False,
                    "deposit_disabled": False,
                    "trade_disabled": False,
                    "chains": [],
                }
                for code in codes
            ]
        )

    async def _currency_pairs(self, request: web.Request) -> web.Response:
        return json_response([self._pair_info(x) for x in self._listings.values()])

    async def _margin_pairs(self, request: web.Request) -> web.Response:
        return json_response([])  # no margin trading on this fake

    def _pair_info(self, listing: Listing) -> dict[str, Any]:
        return {
            "id": self.gate_id(listing),
            "base": listing.base,
            "base_name": listing.base,
            "quote": listing.quote,
            "quote_name": listing.quote,
            "fee": "0.2",
            "min_base_amount": num(listing.step_size),
            "min_quote_amount": num(MIN_QUOTE_AMOUNT),
            "max_quote_amount": "5000000",
            "amount_precision": decimals(listing.step_size),
            "precision": decimals(listing.tick_size),
            "trade_status": "tradable" if listing.status == "TRADING" else "untradable",
            "sell_start": 0,
            "buy_start": 0,
            "type": "normal",
        }

    async def _contracts(self, request: web.Request) -> web.Response:
        if request.match_info["settle"] != "usdt":
            return json_response([])  # no BTC-settled contracts listed
        return json_response([self._contract_info(x) for x in self._contracts_listed()])

    def _contract_info(self, listing: Listing) -> dict[str, Any]:
        return {
            "name": self.gate_id(listing),
            "type": "direct",
            "quanto_multiplier": num(self.contract_size),
            "leverage_min": "1",
            "leverage_max": "100",
            "maintenance_rate": "0.005",
            "mark_type": "index",
            "mark_price": num(listing.price),
            "index_price": num(listing.price),
            "last_price": num(listing.price),
            "maker_fee_rate": "-0.00025",
            "taker_fee_rate": "0.00075",
            "order_price_round": num(listing.tick_size),
            "mark_price_round": num(listing.tick_size),
            "order_price_deviate": "0.5",
            "order_size_min": 1,
            "order_size_max": 1_000_000,
            "enable_decimal": False,
            "in_delisting": False,
            "status": "trading" if listing.status == "TRADING" else "delisting",
            "create_time": 1_600_000_000,
        }

    async def _spot_tickers(self, request: web.Request) -> web.Response:
        pair = request.query.get("currency_pair")
        listings = [self._pair(pair)] if pair else list(self._listings.values())
        return json_response([self._ticker(x, "currency_pair") for x in listings])

    async def _futures_tickers(self, request: web.Request) -> web.Response:
        settle, name = request.match_info["settle"], request.query.get("contract")
        if settle != "usdt":
            return json_response([])
        listings = [self._contract(settle, name)] if name else self._contracts_listed()
        return json_response([self._ticker(x, "contract") for x in listings])

    def _ticker(self, listing: Listing, key: str) -> dict[str, Any]:
        trading = listing.status == "TRADING"
        bid, ask = book_quote(listing, self.spread) if trading else (0.0, 0.0)
        price = num(listing.price)
        entry = {
            key: self.gate_id(listing),
            "last": price,
            "lowest_ask": num(ask) if trading else "",
            "highest_bid": num(bid) if trading else "",
            "change_percentage": "0",
            "high_24h": price,
            "low_24h": price,
        }
        if key == "contract":
            entry |= {"mark_price": price, "index_price": price, "volume_24h_base": "0", "total_size": "0"}
        else:
            entry |= {"base_volume": "0", "quote_volume": "0"}
        return entry
