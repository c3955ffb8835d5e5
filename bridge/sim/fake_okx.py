"""FakeOkx: a local aiohttp server speaking enough of OKX's v5 REST API for ccxt 4.5.90's own code paths,
spot and USDT perpetual swaps (written from OKX's docs, www.okx.com/docs-v5/en/, and ccxt's okx.py).

Signed requests carry OK-ACCESS-KEY, -PASSPHRASE, -TIMESTAMP (ISO 8601, refused 30 s away from the
server's clock: 50102) and -SIGN, the base64 HMAC-SHA256 of timestamp + method + path with query + body.
Orders arrive as ccxt sends them, a one-element array to POST /trade/batch-orders (or one object to
/trade/order): market orders fill whole at the listing's price (a spot market buy with tgtCcy=quote_ccy
spends `sz` quote); `ioc` and `fok` limit orders fill at once as `limit_fill` says, the rest cancelled
(state "canceled", as OKX reports an IOC that did not fill whole). OKX answers a placed order with its
ids only (sCode "0"), never its fill: the fill is read with GET /trade/order. Swap orders are sized in
contracts of `ctVal` base units, need tdMode cross or isolated, and move a net position that reduceOnly
orders may only shrink. Conditional (stop-loss) algo orders rest until `set_price` crosses their
trigger: see fake_okx_algo.py. Public endpoints: fake_okx_public.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import orjson
from aiohttp import web

from bridge.sim.fake_okx_account import OkxAccount
from bridge.sim.fake_okx_algo import OkxAlgo
from bridge.sim.fake_okx_public import DEFAULT_SWAPS, SWAP_QUOTE, OkxListing, inst_id
from bridge.sim.fake_venue import (
    DEFAULT_MARKETS,
    MIN_NOTIONAL,
    ApiError,
    FaultKind,
    Order,
    fill_amounts,
    fmt_num,
    json_response,
    limit_fill,
)

DEFAULT_API_KEY = "fake-okx-key"
DEFAULT_SECRET = "fake-okx-secret"  # noqa: S105 - the fake's own test credential
DEFAULT_PASSPHRASE = "fake-okx-passphrase"  # noqa: S105 - the fake's own test credential
TAKER_FEE = {"SPOT": 0.001, "SWAP": 0.0005}  # OKX's regular-user taker rates
CLIENT_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # clOrdId: letters and digits, 1-32
_FILLS = ("market", "optimal_limit_ioc", "ioc", "fok")
# OKX's state for each of the fake's internal statuses (FakeVenue keeps Binance's names)
STATES = {"NEW": "live", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled", "CANCELED": "canceled"}


@dataclass
class OkxOrder(Order):
    """An order with OKX's terms: `size` is `sz` as sent (contracts on a swap, quote units for a spot
    market buy with tgtCcy=quote_ccy)."""

    inst_type: str = "SPOT"
    td_mode: str = "cash"
    tgt_ccy: str = ""
    size: str = ""
    reduce_only: bool = False
    leverage: str = ""
    fee: float = 0.0
    fee_ccy: str = ""


class FakeOkx(OkxAccount):
    """The fake exchange. `async with FakeOkx() as fake:` then merge `fake.ccxt_config()` into ccxt's okx
    config (with apiKey, secret and password: the passphrase). `balances` (what GET account/balance
    reports) is what tests set; `positions` holds each swap's net position in contracts;
    `position_mode` is "net_mode" (one-way) or "long_short_mode" (hedge); `leverage` is what POST
    account/set-leverage set, by instrument id: (mgnMode, lever)."""

    _FAULT_ERRORS: ClassVar[Mapping[FaultKind, tuple[int, int, str]]] = {
        "insufficient_balance": (200, 51008, "Order failed. Insufficient USDT balance in account."),
        "min_notional": (200, 51020, "Order amount should be greater than the min available amount."),
        "rate_limited": (429, 50011, "Too Many Requests"),
        "server_error_after": (500, 50026, "System error. Try again later."),
        "timestamp": (401, 50102, "Timestamp request expired"),
    }

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        passphrase: str = DEFAULT_PASSPHRASE,
        markets: Iterable[tuple[str, str, float]] = DEFAULT_MARKETS,
        swaps: Iterable[tuple[str, float, float]] = DEFAULT_SWAPS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.passphrase = passphrase
        self.balances = {"USDT": 100000.0}
        self.positions = {}
        self.position_mode = "net_mode"
        self.leverage = {}
        super().__init__(api_key=api_key, secret=secret, markets=markets, host=host, port=port)
        for base, price, contract_value in swaps:
            self.add_market(
                base, SWAP_QUOTE, price=price, swap=True, contract_value=contract_value, step_size=1
            )

    def ccxt_config(self) -> dict[str, Any]:
        """The dict to deep-merge into ccxt's okx config so every API goes to this server."""
        urls = {"rest": self.url}
        return {"urls": {"api": urls, "test": dict(urls)}, "timeout_on_exit": 0}

    def delist(self, symbol: str) -> None:
        """Remove a market (unified symbol or instrument id): OKX then answers 51001 for it."""
        self._listings.pop(inst_id(symbol), None)
        self._markets_changed()

    def sent_orders(self) -> list[dict[str, str]]:
        """The order requests received (regular and algo), as their JSON objects with text values."""
        return [order.params for order in self.orders]

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_post("/api/v5/trade/order", self._post_order)
        router.add_post("/api/v5/trade/batch-orders", self._post_order)
        router.add_get("/api/v5/trade/order", self._get_order)
        router.add_post("/api/v5/trade/cancel-order", self._cancel_order)

    # ----- orders -----

    async def _post_order(self, request: web.Request) -> web.Response:
        """POST trade/order (one object) or trade/batch-orders (an array): each is created or refused on
        its own (sCode); code "1" when all were refused."""
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body = await request.text()
        parsed = self._json_body(body)
        items: list[dict[str, Any]] = parsed if isinstance(parsed, list) else [parsed]
        for item in items:
            await self._receive_order(_as_text(item), received_ns, received_mono_ns)
        self._authenticate(request, body)
        fault = self._next_fault()
        try:
            self._fail_before_order(fault)
        except OrderRefused as refused:
            return self._results(
                [_refusal(str(i.get("clOrdId") or ""), refused.error, self._now_ms()) for i in items]
            )
        results = [self._place(item) for item in items]
        await self._fail_after(fault)
        if fault == "garbled_after":  # a 200 whose body was cut short (a proxy, a broken connection)
            return web.Response(text='{"code":"0","data":[{"ordId":', content_type="application/json")
        if fault == "empty_after":
            return json_response({})
        if fault == "not_json_after":
            return web.Response(text="<html><body>OK</body></html>", content_type="text/html")
        return self._results(results)

    def _fail_before_order(self, fault: FaultKind | None) -> None:
        """A fault that refuses the order: an order-level one (51xxx) is answered in the batch shape."""
        try:
            self._fail_before(fault)
        except ApiError as exc:
            if exc.code < 51000:
                raise
            raise OrderRefused(exc) from None

    def _results(self, results: list[dict[str, Any]]) -> web.Response:
        failed = sum(1 for item in results if item["sCode"] != "0")
        code, msg = (
            ("0", "")
            if not failed
            else ("1", "All operations failed")
            if failed == len(results)
            else ("2", "Batch operation partially succeeded")
        )
        now = str(self._now_ms() * 1000)
        return json_response({"code": code, "msg": msg, "data": results, "inTime": now, "outTime": now})

    def _place(self, params: dict[str, Any]) -> dict[str, Any]:
        """One order of a request: the ids and sCode "0", or sCode and sMsg when refused."""
        client_id = str(params.get("clOrdId") or "")
        try:
            order = self._create(params)
        except ApiError as exc:
            if exc.code < 51000:  # not an order-level refusal: the whole request fails
                raise
            return _refusal(client_id, exc, self._now_ms())
        except OrderRefused as refused:
            return _refusal(client_id, refused.error, self._now_ms())
        return {
            "clOrdId": order.client_order_id,
            "ordId": str(order.order_id),
            "tag": str(params.get("tag") or ""),
            "ts": str(order.time_ms),
            "sCode": "0",
            "sMsg": "Order placed",
        }

    def _create(self, params: dict[str, Any]) -> OkxOrder:
        listing = self._okx_listing(params.get("instId"))
        self._apply_price_move(listing)
        if listing.status != "TRADING":
            raise ApiError(200, 51000, "Trading halted for this instrument (FakeOkx)")
        side, ord_type = params.get("side"), params.get("ordType")
        if side not in ("buy", "sell"):
            raise ApiError(200, 51000, "Parameter side error")
        if ord_type not in _FILLS:
            raise ApiError(200, 51000, "FakeOkx fills market, optimal_limit_ioc, ioc and fok orders only")
        client_id = self._client_id(params)
        td_mode = params.get("tdMode")
        if td_mode not in (("cross", "isolated") if listing.swap else ("cash",)):
            raise ApiError(200, 51000, "Parameter tdMode error")
        reduce_only = params.get("reduceOnly") in (True, "true")
        if reduce_only and not listing.swap:
            raise ApiError(
                200, 51139, "Reduce-only feature is unavailable for the spot transactions by simple account"
            )
        size = _decimal(params, "sz")
        tgt_ccy = str(
            params.get("tgtCcy") or ("quote_ccy" if side == "buy" and not listing.swap else "base_ccy")
        )
        quote_sized = ord_type == "market" and not listing.swap and tgt_ccy == "quote_ccy"
        if not quote_sized:
            self._check_lot(listing, size)
        units = float(size) * (listing.contract_value if listing.swap else 1.0)
        if ord_type in ("ioc", "fok"):
            price = _decimal(params, "px")
            if price % Decimal(str(listing.tick_size)) != 0:
                raise ApiError(200, 51000, "Parameter px error")
            qty, quote_qty = limit_fill(
                listing.price,
                buy=side == "buy",
                limit=float(price),
                qty=units,
                depth=listing.depth,
                all_or_none=ord_type == "fok",
            )
            limit_price = float(price)
        elif quote_sized:
            qty, quote_qty = fill_amounts(listing.price, quote_qty=float(size))
            limit_price = 0.0
        else:
            qty, quote_qty = fill_amounts(listing.price, qty=units)
            limit_price = 0.0
        if not listing.swap and (quote_qty if qty > 0 else float(size) * listing.price) < MIN_NOTIONAL:
            raise ApiError(200, 51020, "Order amount should be greater than the min available amount.")
        if listing.swap:
            self._check_reduce_only(listing, side, float(size), reduce_only)
        order = OkxOrder(
            next(self._ids),
            client_id,
            listing.symbol,
            side,
            qty,
            quote_qty,
            listing.price,
            self._now_ms(),
            order_type=ord_type,
            limit_price=limit_price,
            orig_qty=units,
            status="FILLED" if qty >= units or quote_sized else "CANCELED",
            inst_type=listing.inst_type,
            td_mode=str(td_mode),
            tgt_ccy="" if listing.swap else tgt_ccy,
            size=str(params.get("sz")),
            reduce_only=reduce_only,
            leverage=self.leverage.get(listing.symbol, ("", ""))[1] if listing.swap else "",
        )
        self._settle(listing, order)
        self._store(order)
        return order

    def _client_id(self, params: dict[str, Any]) -> str:
        client_id = str(params.get("clOrdId") or "")
        if client_id and not CLIENT_ID.fullmatch(client_id):
            raise ApiError(200, 51000, "Parameter clOrdId error")
        existing = self._by_client_id.get(client_id) if client_id else None
        if existing is not None and existing.open:
            raise ApiError(200, 51016, "Duplicated clOrdId")
        return client_id

    @staticmethod
    def _check_lot(listing: OkxListing, size: Decimal) -> None:
        step = Decimal(str(listing.step_size))
        if size < step:
            raise ApiError(200, 51020, "Order amount should be greater than the min available amount.")
        if size % step != 0:
            raise ApiError(200, 51121, "Order quantity must be a multiple of the lot size.")

    def _check_reduce_only(self, listing: OkxListing, side: str, contracts: float, reduce_only: bool) -> None:
        held = self.positions.get(listing.symbol, 0.0)
        if reduce_only and (held == 0 or (held > 0) == (side == "buy") or contracts > abs(held) + 1e-12):
            raise ApiError(
                200,
                51169,
                "Order failed because you don't have any positions in this direction for this contract to reduce or close.",
            )

    def _settle(self, listing: OkxListing, order: OkxOrder) -> None:
        """A fill's fee (OKX's taker rate, negative as OKX reports it: in the coin received on spot, in
        USDT on a swap) and, on a swap, its move of the net position."""
        rate = TAKER_FEE[listing.inst_type]
        if listing.swap:
            order.fee, order.fee_ccy = -round(order.quote_qty * rate, 8), listing.quote
            contracts = order.qty / listing.contract_value
            signed = contracts if order.side == "buy" else -contracts
            self.positions[listing.symbol] = round(self.positions.get(listing.symbol, 0.0) + signed, 8)
        elif order.side == "buy":
            order.fee, order.fee_ccy = -round(order.qty * rate, 8), listing.base
        else:
            order.fee, order.fee_ccy = -round(order.quote_qty * rate, 8), listing.quote

    def _store(self, order: OkxOrder) -> None:
        info: dict[str, Any] = {}
        self._book(order, info)
        self._refresh(order)

    def _refresh(self, order: Order) -> None:
        """Bring what GET trade/order answers (and `executed` shows) up to the order's state."""
        assert isinstance(order, OkxOrder)
        order.info.clear()
        order.info.update(self._order_detail(order))

    def _order_detail(self, order: OkxOrder) -> dict[str, Any]:
        listing = self._okx_listing(order.symbol)
        filled = order.qty / listing.contract_value if listing.swap else order.qty
        size = fmt_num(filled) if filled else "0"
        return {
            "instType": order.inst_type,
            "instId": order.symbol,
            "ordId": str(order.order_id),
            "clOrdId": order.client_order_id,
            "tag": "",
            "px": fmt_num(order.limit_price) if order.limit_price else "",
            "sz": order.size,
            "ordType": order.order_type,
            "side": order.side,
            "posSide": "net",
            "tdMode": order.td_mode,
            "tgtCcy": order.tgt_ccy,
            "accFillSz": size,
            "fillPx": fmt_num(order.price) if filled else "",
            "fillSz": size,
            "fillTime": str(order.time_ms) if filled else "",
            "tradeId": str(order.order_id) if filled else "",
            "avgPx": fmt_num(order.price) if filled else "",
            "state": STATES.get(order.status, "canceled"),
            "lever": order.leverage,
            "fee": fmt_num(order.fee),
            "feeCcy": order.fee_ccy,
            "rebate": "0",
            "rebateCcy": order.fee_ccy,
            "pnl": "0",
            "category": "normal",
            "reduceOnly": "true" if order.reduce_only else "false",
            "cancelSource": "" if order.status != "CANCELED" else "14",  # 14: IOC remainder cancelled
            "stpMode": "cancel_maker",
            "source": "",
            "uTime": str(order.time_ms),
            "cTime": str(order.time_ms),
        }

    async def _get_order(self, request: web.Request) -> web.Response:
        """GET trade/order?instId=&clOrdId= (or ordId=): the order, newest with that client id; 51603
        when there is none on that instrument."""
        self._authenticate(request, "")
        self._fail_before(self._next_lookup_fault())
        query = request.query
        listing = self._okx_listing(query.get("instId"))
        order = self._find_regular(listing.symbol, query.get("clOrdId"), query.get("ordId"))
        if order is None:
            raise ApiError(200, 51603, "Order does not exist")
        return self.ok([order.info])

    def _find_regular(self, symbol: str, client_id: str | None, order_id: str | None) -> OkxOrder | None:
        if not client_id and not order_id:
            raise ApiError(200, 51003, "Either client order ID or order ID is required.")
        found: Order | None = None
        if client_id:
            found = self._by_client_id.get(client_id)
        elif order_id and order_id.isdigit():
            found = self._by_id.get(int(order_id))
        if not isinstance(found, OkxOrder) or found.symbol != symbol:
            return None
        return found

    async def _cancel_order(self, request: web.Request) -> web.Response:
        """POST trade/cancel-order {instId, clOrdId|ordId}: only a live order can be cancelled (sCode
        51400 otherwise; this fake's regular orders never rest, so that is every one)."""
        body = await request.text()
        self._authenticate(request, body)
        fault = self._next_cancel_fault()
        self._fail_before(fault)
        params = self._json_body(body)
        listing = self._okx_listing(params.get("instId"))
        order = self._find_regular(listing.symbol, params.get("clOrdId"), params.get("ordId"))
        client_id = str(params.get("clOrdId") or "")
        if order is None or not order.open:
            error = ApiError(
                200,
                51400,
                "Order cancellation failed as the order has been filled, canceled or does not exist.",
            )
            return self._results([_refusal(client_id, error, self._now_ms())])
        order.status = "CANCELED"
        self._refresh(order)
        await self._fail_after(fault)
        return self._results(
            [
                {
                    "clOrdId": order.client_order_id,
                    "ordId": str(order.order_id),
                    "sCode": "0",
                    "sMsg": "",
                    "ts": str(self._now_ms()),
                }
            ]
        )

    # ----- triggered stops (fake_okx_algo) -----

    def _fill_triggered(self, algo: OkxAlgo, listing: OkxListing) -> int:
        qty, quote_qty = fill_amounts(listing.price, qty=algo.orig_qty or 0.0)
        order = OkxOrder(
            next(self._ids),
            algo.order_client_id,
            listing.symbol,
            algo.side,
            qty,
            quote_qty,
            listing.price,
            self._now_ms(),
            order_type="limit" if algo.limit_price else "market",
            limit_price=algo.limit_price,
            orig_qty=qty,
            status="FILLED",
            inst_type=listing.inst_type,
            td_mode=algo.td_mode,
            size=algo.size,
            reduce_only=algo.reduce_only,
            leverage=self.leverage.get(listing.symbol, ("", ""))[1],
        )
        self._settle(listing, order)
        self._store(order)
        return order.order_id

    def _check_stop_position(self, listing: OkxListing, algo: OkxAlgo) -> None:
        if listing.swap:
            self._check_reduce_only(listing, algo.side, float(algo.size), algo.reduce_only)


class OrderRefused(Exception):
    """An order-level refusal (a 51xxx code) raised before the order is parsed: answered in the batch
    shape, {"code": "1", "data": [{"sCode": ..., "sMsg": ...}]}."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.msg)
        self.error = error


def _refusal(client_id: str, exc: ApiError, now_ms: int) -> dict[str, Any]:
    return {
        "clOrdId": client_id,
        "ordId": "",
        "tag": "",
        "ts": str(now_ms),
        "sCode": str(exc.code),
        "sMsg": exc.msg,
    }


def _decimal(params: dict[str, Any], name: str) -> Decimal:
    text = str(params.get(name) or "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not text or not value.is_finite() or value <= 0:
        raise ApiError(200, 51000, f"Parameter {name} error")
    return value


def _as_text(item: Any) -> dict[str, str]:
    """A JSON object's values as text, booleans as JSON spells them (what ReceivedOrder holds)."""
    if not isinstance(item, dict):
        return {}
    return {str(k): orjson.dumps(v).decode() if not isinstance(v, str) else v for k, v in item.items()}


__all__ = ["DEFAULT_API_KEY", "DEFAULT_PASSPHRASE", "DEFAULT_SECRET", "FakeOkx", "OkxOrder", "inst_id"]
