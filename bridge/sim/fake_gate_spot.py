"""The signed spot half of FakeGate (fake_gate.py): Gate APIv4's request signing, account, spot orders,
and the order book-keeping the futures half shares. Signed requests are checked as Gate checks them (KEY, Timestamp in seconds, SIGN =
hex HMAC-SHA512 of method, path, query, SHA512 of the body and timestamp), errors come in Gate's
shape (`{"label", "message"}`) with Gate's labels. Spot market orders and limit IOC orders fill at
once at the listing's price (up to its depth for a limit); futures orders (size in contracts, signed)
fill the same way and move the account's position, a reduce-only order only towards zero. An order is
found by its `text` while open and for `text_window_s` after it finished (Gate's window), by id
always, and in the finished-orders list. Public endpoints: fake_gate_public.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import unquote

import orjson
from aiohttp import web

from bridge.sim.fake_gate_public import API_PREFIX, MIN_QUOTE_AMOUNT, GateError, GatePublicApi, num
from bridge.sim.fake_venue import DEFAULT_MARKETS, FaultKind, Listing, Order, json_response, limit_fill

DEFAULT_API_KEY = "fake-gate-key"
DEFAULT_SECRET = "fake-gate-secret"  # noqa: S105 - the fake's own test credential
TIMESTAMP_WINDOW_S = 60  # Gate refuses a Timestamp further than this from its clock (REQUEST_EXPIRED)
# Gate finds a finished order by its `text` only for a while (library-facts: ~60 s futures, ~1 h spot)
TEXT_WINDOW_S: dict[str, float] = {"spot": 3600.0, "futures": 60.0}
_TEXT = re.compile(r"t-[0-9A-Za-z_.-]{1,28}")  # Gate's rule for `text`: "t-" then at most 28 bytes

Kind = Literal["spot", "futures"]


class GateSpotApi(GatePublicApi):
    """GatePublicApi with Gate's signed account and spot order endpoints. Subclassed by FakeGate.

    `balances` (spot, available per currency) and `futures_available` (USDT margin) are what the account
    reports; with `track_balances` a spot order the account cannot pay for is refused BALANCE_NOT_ENOUGH.
    `dual_mode` is the futures position mode (hedge when True), `leverage` what was set per contract."""

    _GATE_FAULTS: ClassVar[Mapping[FaultKind, tuple[int, str, str]]] = {
        "insufficient_balance": (400, "BALANCE_NOT_ENOUGH", "Not enough balance"),
        "min_notional": (
            400,
            "INVALID_PARAM_VALUE",
            "Your order size 1 USDT is too small. The minimum is 3 USDT",
        ),
        "rate_limited": (429, "TOO_MANY_REQUESTS", "Request Rate limit Exceeded"),
        "server_error_after": (500, "SERVER_ERROR", "Internal server error"),
        "timestamp": (401, "REQUEST_EXPIRED", "Request timestamp expired"),
    }

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        markets: Iterable[tuple[str, str, float]] = DEFAULT_MARKETS,
        host: str = "127.0.0.1",
        port: int = 0,
        track_balances: bool = False,
    ) -> None:
        self.balances: dict[str, float] = {"USDT": 100000.0}
        self.futures_available = 100000.0
        self.track_balances = track_balances
        self.dual_mode = False
        self.unified_account = False  # account/detail key mode 2 when True
        self.leverage: dict[str, dict[str, str]] = {}  # contract -> {"leverage", "cross_leverage_limit"}
        self.positions: dict[str, float] = {}  # contract -> signed size in contracts
        self.text_window_s = dict(TEXT_WINDOW_S)
        self._kinds: dict[int, Kind] = {}
        self._finished_ms: dict[int, int] = {}
        super().__init__(api_key=api_key, secret=secret, markets=markets, host=host, port=port)

    # ----- helpers for tests -----

    def age_finished_orders(self, seconds: float) -> None:
        """Pretend every finished order ended `seconds` earlier: past `text_window_s`, Gate no longer
        finds it by its text (only by id, or in the finished-orders list)."""
        for order_id in self._finished_ms:
            self._finished_ms[order_id] -= int(seconds * 1000)

    def order_by_text(self, text: str) -> Order | None:
        return self._by_client_id.get(text)

    def delist(self, symbol: str) -> None:
        """Remove a listing (venue id "ABCUSDT" or unified "ABC/USDT"): Gate then answers
        INVALID_CURRENCY_PAIR / CONTRACT_NOT_FOUND for it."""
        self._listings.pop(symbol.replace("/", ""), None)
        self._markets_changed()

    # ----- routes -----

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        p = API_PREFIX
        router.add_get(p + "/account/detail", self._account_detail)
        router.add_get(p + "/spot/accounts", self._spot_accounts)
        router.add_post(p + "/spot/orders", self._post_spot_order)
        router.add_get(p + "/spot/orders", self._list_spot_orders)
        router.add_get(p + "/spot/open_orders", self._spot_open_orders)
        router.add_get(p + "/spot/orders/{order_id}", self._get_spot_order)
        router.add_delete(p + "/spot/orders/{order_id}", self._delete_spot_order)

    # ----- authentication -----

    def _authenticate(self, request: web.Request, body: str) -> None:
        """Gate's APIv4 signature check, in the order Gate reports problems."""
        key, stamp, sign = (request.headers.get(h) for h in ("KEY", "Timestamp", "SIGN"))
        if not key or not stamp or not sign:
            raise GateError(401, "MISSING_REQUIRED_HEADER", "Missing required header: KEY, Timestamp or SIGN")
        if not hmac.compare_digest(key, self.api_key):
            raise GateError(401, "INVALID_KEY", "Invalid key provided")
        try:
            stamp_s = float(stamp)
        except ValueError:
            raise GateError(401, "REQUEST_EXPIRED", "Invalid Timestamp") from None
        if abs(self._now_ms() / 1000 - stamp_s) > TIMESTAMP_WINDOW_S:
            raise GateError(
                401, "REQUEST_EXPIRED", "gap between request Timestamp and server time exceeds 60"
            )
        _, _, raw_query = request.raw_path.partition("?")
        payload = "\n".join(
            (
                request.method,
                request.path,
                unquote(raw_query),
                hashlib.sha512(body.encode()).hexdigest(),
                stamp,
            )
        )
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha512).hexdigest()
        if not hmac.compare_digest(sign, expected):
            raise GateError(401, "INVALID_SIGNATURE", "Signature mismatch")

    def _fail_before(self, fault: FaultKind | None) -> None:
        if fault is None or fault in ("server_error_after", "timeout_after") or fault.endswith("_after"):
            return
        if fault == "server_error_before":
            raise web.HTTPInternalServerError(text="Internal Server Error")
        status, label, message = self._GATE_FAULTS[fault]
        headers = None
        if fault == "rate_limited":  # Gate's rate-limit headers (no Retry-After)
            reset = str(self._now_ms() // 1000 + self.retry_after_s)
            headers = {"X-Gate-RateLimit-Limit": "10", "X-Gate-RateLimit-Reset-Timestamp": reset}
        raise GateError(status, label, message, headers=headers)

    async def _fail_after(self, fault: FaultKind | None) -> None:
        if fault == "server_error_after":
            raise GateError(*self._GATE_FAULTS[fault])
        if fault == "timeout_after":
            await self._released.wait()

    async def _body(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        text = await request.text()
        try:
            data = orjson.loads(text) if text else {}
        except orjson.JSONDecodeError:
            raise GateError(400, "INVALID_REQUEST_BODY", "Invalid request body") from None
        if not isinstance(data, dict):
            raise GateError(400, "INVALID_REQUEST_BODY", "Invalid request body")
        return text, data

    # ----- account -----

    async def _account_detail(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        mode = 2 if self.unified_account else 1
        return json_response(
            {"user_id": 10001, "ip_whitelist": [], "currency_pairs": [], "key": {"mode": mode}}
        )

    async def _spot_accounts(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        return json_response(
            [
                {"currency": c, "available": num(v), "locked": "0", "update_id": 1}
                for c, v in self.balances.items()
            ]
        )

    # ----- spot orders -----

    async def _post_spot_order(self, request: web.Request) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body, data = await self._body(request)
        await self._receive_order({k: str(v) for k, v in data.items()}, received_ns, received_mono_ns)
        self._authenticate(request, body)
        fault = self._next_fault()
        self._fail_before(fault)
        order = self._create_spot(data)
        await self._fail_after(fault)
        return json_response(order.info, status=201)

    def _create_spot(self, data: dict[str, Any]) -> Order:
        listing = self._pair(data.get("currency_pair"))
        self._apply_price_move(listing)
        text = self._text(data)
        side, kind = data.get("side"), data.get("type", "limit")
        if side not in ("buy", "sell"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: side")
        if data.get("account", "spot") != "spot":
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: account")
        if listing.status != "TRADING":
            raise GateError(400, "INVALID_CURRENCY_PAIR", f"Trading is disabled for {self.gate_id(listing)}")
        tif = str(data.get("time_in_force", "gtc"))
        amount = self._decimal(data, "amount")
        if kind == "market":
            if tif not in ("ioc", "fok"):
                raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: time_in_force")
            # a market buy's amount is the quote to spend, a sell's the base to sell
            quote = amount if side == "buy" else amount * Decimal(repr(listing.price))
            self._check_min(quote)
            qty = float(amount) / listing.price if side == "buy" else float(amount)
            qty, quote_qty = round(qty, 8), round(qty * listing.price, 8)
            self._check_funds(listing, side, qty, quote_qty)
            order = self._new_order(listing, side, qty, quote_qty, text)
            order.order_type, order.time_in_force, order.orig_qty = "market", tif, float(amount)
        elif kind == "limit":
            if tif != "ioc":  # not Gate's answer: this fake has no book for a resting order
                raise GateError(
                    400, "INVALID_PARAM_VALUE", "FakeGate fills limit orders with time_in_force ioc only"
                )
            price = self._decimal(data, "price")
            self._check_grid(listing, amount, price)
            self._check_min(amount * price)
            self._check_funds(listing, side, float(amount), float(amount * price))
            filled, quote_qty = limit_fill(
                listing.price, buy=side == "buy", limit=float(price), qty=float(amount), depth=listing.depth
            )
            order = self._new_order(listing, side, filled, quote_qty, text)
            order.order_type, order.time_in_force = "limit", "ioc"
            order.limit_price, order.orig_qty = float(price), float(amount)
        else:
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: type")
        full = order.qty >= (order.orig_qty or 0) or kind == "market"
        order.status = "closed" if full else "cancelled"
        self._settle_spot(listing, order)
        self._store(order, "spot")
        return order

    def _check_min(self, quote: Decimal) -> None:
        if quote < Decimal(repr(MIN_QUOTE_AMOUNT)):
            message = f"Your order size {num(float(quote))} USDT is too small. The minimum is 3 USDT"
            raise GateError(400, "INVALID_PARAM_VALUE", message)

    def _check_grid(self, listing: Listing, amount: Decimal, price: Decimal) -> None:
        if price <= 0 or price % Decimal(repr(listing.tick_size)) != 0:
            raise GateError(400, "INVALID_PRECISION", "Invalid price precision")
        if amount <= 0 or amount % Decimal(repr(listing.step_size)) != 0:
            raise GateError(400, "INVALID_PRECISION", "Invalid amount precision")

    def _check_funds(self, listing: Listing, side: str, qty: float, quote_qty: float) -> None:
        asset, need = (listing.base, qty) if side == "sell" else (listing.quote, quote_qty)
        if self.track_balances and round(self.balances.get(asset, 0.0) - need, 8) < 0:
            raise GateError(400, *self._GATE_FAULTS["insufficient_balance"][1:])

    def _settle_spot(self, listing: Listing, order: Order) -> None:
        if not self.track_balances or order.qty <= 0:
            return
        base, quote = order.qty, order.quote_qty
        sign = 1 if order.side == "buy" else -1
        self.balances[listing.base] = round(self.balances.get(listing.base, 0.0) + sign * base, 8)
        self.balances[listing.quote] = round(self.balances.get(listing.quote, 0.0) - sign * quote, 8)

    def _spot_info(self, order: Order) -> dict[str, Any]:
        """The order as Gate's spot endpoints answer it."""
        finished = self._finished_ms.get(order.order_id, order.time_ms)
        market_buy = order.order_type == "market" and order.side == "buy"
        asked = order.orig_qty if order.orig_qty is not None else order.qty
        left = asked - (order.quote_qty if market_buy else order.qty)
        open_ = order.status == "open"
        finish_as = {"open": "open", "closed": "filled"}.get(order.status, "ioc")
        if order.status == "cancelled" and order.time_in_force != "ioc":
            finish_as = "cancelled"
        return {
            "id": str(order.order_id),
            "text": order.client_order_id,
            "amend_text": "-",
            "create_time": str(order.time_ms // 1000),
            "update_time": str(finished // 1000),
            "create_time_ms": order.time_ms,
            "update_time_ms": finished,
            "status": "open" if open_ else ("closed" if order.status == "closed" else "cancelled"),
            "currency_pair": self.gate_id(self._listings[order.symbol]),
            "type": order.order_type,
            "account": "spot",
            "side": order.side,
            "amount": num(asked),
            "price": num(order.limit_price),
            "time_in_force": order.time_in_force,
            "iceberg": "0",
            "left": num(max(left, 0.0)),
            "filled_amount": num(order.qty),
            "fill_price": num(order.quote_qty),
            "filled_total": num(order.quote_qty),
            "avg_deal_price": num(order.price) if order.qty > 0 else "",
            "fee": "0",
            "fee_currency": self._listings[order.symbol].base
            if order.side == "buy"
            else self._listing_quote(order),
            "point_fee": "0",
            "gt_fee": "0",
            "gt_discount": False,
            "rebated_fee": "0",
            "rebated_fee_currency": self._listing_quote(order),
            "finish_as": finish_as,
        }

    def _listing_quote(self, order: Order) -> str:
        return self._listings[order.symbol].quote

    async def _get_spot_order(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        self._fail_before(self._next_lookup_fault())
        order = self._find(request.match_info["order_id"], "spot", request.query.get("currency_pair"))
        return json_response(self._refreshed(order).info)

    async def _list_spot_orders(self, request: web.Request) -> web.Response:
        """GET /spot/orders?currency_pair=&status=open|finished (&from=&to= in seconds, &limit=)."""
        self._authenticate(request, "")
        self._fail_before(self._next_lookup_fault())
        listing = self._pair(request.query.get("currency_pair"))
        status = request.query.get("status")
        if status not in ("open", "finished"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: status")
        orders = self._listed("spot", listing, status, request.query)
        return json_response([self._refreshed(o).info for o in orders])

    async def _spot_open_orders(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        groups: dict[str, list[dict[str, Any]]] = {}
        for order in self._by_id.values():
            if self._kinds.get(order.order_id) == "spot" and order.status == "open":
                info = self._refreshed(order).info
                groups.setdefault(info["currency_pair"], []).append(info)
        return json_response([{"currency_pair": k, "total": len(v), "orders": v} for k, v in groups.items()])

    async def _delete_spot_order(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        fault = self._next_cancel_fault()
        self._fail_before(fault)
        order = self._find(request.match_info["order_id"], "spot", request.query.get("currency_pair"))
        if order.status != "open":
            raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        order.status = "cancelled"
        order.time_in_force = "gtc"  # finish_as "cancelled", not "ioc"
        self._finished_ms[order.order_id] = self._now_ms()
        await self._fail_after(fault)
        return json_response(self._refreshed(order).info)

    # ----- shared -----

    def _text(self, data: dict[str, Any]) -> str | None:
        text = data.get("text")
        if text is None:
            return None
        if not isinstance(text, str) or not _TEXT.fullmatch(text):
            raise GateError(400, "INVALID_PARAM_VALUE", f"invalid argument: text {text}")
        return text

    @staticmethod
    def _decimal(data: dict[str, Any], name: str, *, signed: bool = False) -> Decimal:
        raw = data.get(name)
        if raw is None or raw == "":
            raise GateError(400, "MISSING_REQUIRED_PARAM", f"Missing required parameter: {name}")
        try:
            value = Decimal(str(raw))
        except InvalidOperation:
            raise GateError(400, "INVALID_PARAM_VALUE", f"invalid argument: {name}") from None
        if not value.is_finite() or (value < 0 and not signed):
            raise GateError(400, "INVALID_PARAM_VALUE", f"invalid argument: {name}")
        return value

    def _store(self, order: Order, kind: Kind) -> None:
        self._kinds[order.order_id] = kind
        if order.status != "open":
            self._finished_ms[order.order_id] = order.time_ms
        self._refreshed(order)
        self._book(order, order.info)

    def _refreshed(self, order: Order) -> Order:
        """Bring the order's `info` (what lookups answer) up to its state."""
        fresh = self._order_info(order, self._kinds.get(order.order_id, "spot"))
        order.info.clear()
        order.info.update(fresh)
        return order

    def _order_info(self, order: Order, kind: Kind) -> dict[str, Any]:
        """The order as the venue's lookups answer it (FakeGate adds futures)."""
        return self._spot_info(order)

    def _find(self, ref: str, kind: Kind, pair: str | None) -> Order:
        """The order a lookup or cancel names: by id always, by `text` while open or within the text
        window after it finished; ORDER_NOT_FOUND otherwise (and for another market's order)."""
        order: Order | None = None
        if ref.isdigit():
            order = self._by_id.get(int(ref))
        elif ref.startswith("t-"):
            order = self._by_client_id.get(ref)
            finished = None if order is None else self._finished_ms.get(order.order_id)
            if finished is not None and self._now_ms() - finished > self.text_window_s[kind] * 1000:
                order = None  # Gate no longer finds a finished order by its text
        if order is None or self._kinds.get(order.order_id) != kind:
            raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        if kind == "spot":
            self._pair(pair)  # the currency_pair must be a listed pair ...
            if pair is None or pair.replace("_", "") != order.symbol:  # ... and the order's
                raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        return order

    def _listed(self, kind: Kind, listing: Listing, status: str, query: Mapping[str, str]) -> list[Order]:
        """Orders of one market for Gate's list endpoints: open ones, or finished ones (newest first)
        within from/to (seconds) when given."""
        since = int(query.get("from", "0") or 0) * 1000
        until = int(query.get("to", "0") or 0) * 1000 or None
        limit = int(query.get("limit", "100") or 100)
        found = []
        for order in self._by_id.values():
            if self._kinds.get(order.order_id) != kind or order.symbol != listing.symbol:
                continue
            if (order.status == "open") != (status == "open"):
                continue
            if status == "finished" and (
                order.time_ms < since or (until is not None and order.time_ms > until)
            ):
                continue
            found.append(order)
        return sorted(found, key=lambda o: -o.order_id)[:limit]
