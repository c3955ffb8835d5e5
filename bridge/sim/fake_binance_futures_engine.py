"""The matching half of FakeBinanceFutures: USDⓈ-M perpetual listings, one-way positions, margin, orders
(MARKET, LIMIT IOC/FOK, reduceOnly) and conditional orders (STOP_MARKET / TAKE_PROFIT_MARKET through the
algo service, with reduceOnly or closePosition), checked with Binance's futures error codes.

A position is one signed amount per symbol (one-way mode, positionSide BOTH): a buy adds, a sell takes
away, crossing zero flips it. Margin is the notional over the symbol's leverage; a fill that would need
more than the available balance is refused -2019. Realised profit moves the wallet; there are no fees
and no funding. A conditional order triggers when the listing's price crosses its trigger (a stop that
closes a long when the price falls to it, one that closes a short when it rises to it) and then fills
whole at market as a reduce-only order (status FINISHED with its actualOrderId), as Binance's algo
service hands a triggered order to the matching engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.sim.fake_venue import ApiError, Listing, fmt_num, limit_fill

MIN_NOTIONAL = 5.0  # USDT: Binance's usual minimum for a USDⓈ-M order that is not reduce-only
DEFAULT_LEVERAGE = 20
MAX_LEVERAGE = 125
STOP_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
_EXPIRY_REASONS = {"IOC": "UNFILLED_IOC_QUANTITY_EXPIRED", "FOK": "UNFILLED_FOK_ORDER_EXPIRED"}


@dataclass
class PerpPosition:
    amount: float = 0.0  # signed: long > 0, short < 0
    entry_price: float = 0.0


@dataclass
class SymbolSettings:
    leverage: int = DEFAULT_LEVERAGE
    margin_type: str = "CROSSED"  # Binance's default for a symbol never changed


@dataclass
class PerpOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    orig_qty: float
    executed_qty: float
    avg_price: float
    status: str
    time_in_force: str
    reduce_only: bool
    time_ms: int
    limit_price: float = 0.0

    def info(self) -> dict[str, Any]:
        """The order as GET /fapi/v1/order answers it (newOrderRespType RESULT gives the same)."""
        data: dict[str, Any] = {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_order_id,
            "price": fmt_num(self.limit_price),
            "avgPrice": fmt_num(self.avg_price),
            "origQty": fmt_num(self.orig_qty),
            "executedQty": fmt_num(self.executed_qty),
            "cumQty": fmt_num(self.executed_qty),
            "cumQuote": fmt_num(round(self.executed_qty * self.avg_price, 8)),
            "timeInForce": self.time_in_force,
            "type": self.order_type,
            "reduceOnly": self.reduce_only,
            "closePosition": False,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": self.order_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": self.time_ms,
            "updateTime": self.time_ms,
        }
        if self.status == "EXPIRED":
            data["expiryReason"] = _EXPIRY_REASONS.get(self.time_in_force, "INSUFFICIENT_LIQUIDITY")
        return data


@dataclass
class AlgoOrder:
    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    quantity: float  # 0 with close_position
    trigger_price: float
    reduce_only: bool
    close_position: bool
    time_ms: int
    status: str = "NEW"
    actual_order_id: int | None = None
    actual_price: float = 0.0
    trigger_time_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.status == "NEW"

    def info(self) -> dict[str, Any]:
        """The conditional order as POST/GET /fapi/v1/algoOrder answer it."""
        return {
            "algoId": self.algo_id,
            "clientAlgoId": self.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": self.order_type,
            "symbol": self.symbol,
            "side": self.side,
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": fmt_num(self.quantity),
            "algoStatus": self.status,
            "actualOrderId": "" if self.actual_order_id is None else str(self.actual_order_id),
            "actualPrice": fmt_num(self.actual_price),
            "triggerPrice": fmt_num(self.trigger_price),
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": self.close_position,
            "priceProtect": False,
            "reduceOnly": self.reduce_only,
            "createTime": self.time_ms,
            "updateTime": self.trigger_time_ms or self.time_ms,
            "triggerTime": self.trigger_time_ms,
            "goodTillDate": 0,
        }


class PerpEngine:
    """The futures account and its order books (one-way mode). `now_ms` is the venue's clock."""

    def __init__(self, now_ms: Callable[[], int], *, wallet: float = 10_000.0) -> None:
        self._now_ms = now_ms
        self.wallet = wallet  # USDT wallet balance (realised profit moves it)
        self.listings: dict[str, Listing] = {}
        self.positions: dict[str, PerpPosition] = {}
        self.settings: dict[str, SymbolSettings] = {}
        self.dual_side = False  # hedge mode; bridge must refuse it, never switch it
        self.orders_by_cid: dict[str, PerpOrder] = {}
        self.orders_by_id: dict[int, PerpOrder] = {}
        self.algo_by_cid: dict[str, AlgoOrder] = {}
        self.algo_by_id: dict[int, AlgoOrder] = {}
        self._ids = itertools.count(7_000_001)

    # ----- listings, prices, account -----

    def listing(self, symbol: str | None) -> Listing:
        listing = self.listings.get(symbol or "")
        if listing is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return listing

    def setting(self, symbol: str) -> SymbolSettings:
        return self.settings.setdefault(symbol, SymbolSettings())

    def position(self, symbol: str) -> PerpPosition:
        return self.positions.setdefault(symbol, PerpPosition())

    def used_margin(self) -> float:
        return sum(
            abs(p.amount) * p.entry_price / self.setting(s).leverage for s, p in self.positions.items()
        )

    def available(self) -> float:
        return round(self.wallet - self.used_margin(), 8)

    def set_price(self, symbol: str, price: float) -> None:
        """Move a listing's price; conditional orders it crosses trigger and fill at it."""
        listing = self.listing(symbol)
        listing.price = price
        for algo in [a for a in self.algo_by_id.values() if a.symbol == symbol and a.open]:
            if self._crossed(algo, price):
                self._trigger(algo, listing)

    # ----- settings -----

    def set_leverage(self, symbol: str, value: str | None) -> dict[str, Any]:
        self.listing(symbol)
        try:
            leverage = int(value or "")
        except ValueError:
            raise ApiError(
                400, -1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed."
            ) from None
        if not 1 <= leverage <= MAX_LEVERAGE:
            raise ApiError(400, -4028, f"Leverage {leverage} is not valid")
        self.setting(symbol).leverage = leverage
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": symbol}

    def set_margin_type(self, symbol: str, value: str | None) -> dict[str, Any]:
        self.listing(symbol)
        if value not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -1116, "Invalid marginType.")
        setting = self.setting(symbol)
        if setting.margin_type == value:
            raise ApiError(400, -4046, "No need to change margin type.")
        if self.position(symbol).amount != 0:
            raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
        setting.margin_type = value
        return {"code": 200, "msg": "success"}

    # ----- orders -----

    def create(self, params: dict[str, str]) -> PerpOrder:
        listing = self.listing(params.get("symbol"))
        side = _side(params)
        self._check_position_side(params)
        order_type = params.get("type")
        if order_type not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        cid = params.get("newClientOrderId") or f"fake{next(self._ids)}"
        existing = self.orders_by_cid.get(cid)
        if existing is not None and existing.status in ("NEW", "PARTIALLY_FILLED"):
            raise ApiError(400, -4015, "Client order id is not valid.")
        if listing.status != "TRADING":
            raise ApiError(400, -4140, "Invalid symbol status for opening position.")
        if "quoteOrderQty" in params:
            raise ApiError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        reduce_only = _bool_param(params, "reduceOnly")
        qty = _decimal(params, "quantity")
        _check_step(listing, qty)
        tif = "GTC"
        limit = 0.0
        if order_type == "LIMIT":
            tif = params.get("timeInForce") or ""
            if tif not in ("IOC", "FOK"):  # not Binance's answer: this fake has no resting book
                raise ApiError(
                    400, -1, "FakeBinanceFutures fills LIMIT orders with timeInForce IOC or FOK only"
                )
            price = _decimal(params, "price")
            if price % Decimal(str(listing.tick_size)) != 0:
                raise ApiError(400, -4014, "Price not increased by tick size.")
            limit = float(price)
            filled, _ = limit_fill(
                listing.price,
                buy=side == "BUY",
                limit=limit,
                qty=float(qty),
                depth=listing.depth,
                all_or_none=tif == "FOK",
            )
        else:
            if "price" in params:
                raise ApiError(400, -1106, "Parameter 'price' sent when not required.")
            filled = float(qty)
        position = self.position(listing.symbol)
        if reduce_only:
            filled = self._reducible(position, side, filled)
        elif float(qty) * (limit or listing.price) < MIN_NOTIONAL:
            raise ApiError(
                400,
                -4164,
                f"Order's notional must be no smaller than {MIN_NOTIONAL:g} (unless you choose reduce only).",
            )
        self._check_margin(listing, position, side, filled)
        order = PerpOrder(
            next(self._ids),
            cid,
            listing.symbol,
            side,
            order_type,
            float(qty),
            filled,
            listing.price if filled > 0 else 0.0,
            "FILLED" if filled >= float(qty) else "EXPIRED",
            tif,
            reduce_only,
            self._now_ms(),
            limit,
        )
        if order_type == "MARKET" and reduce_only and 0 < filled < float(qty):
            order.status = "FILLED"  # a reduce-only market order is cut to the position and fills whole
        self._fill(position, side, filled, listing.price)
        self.orders_by_cid[cid] = order
        self.orders_by_id[order.order_id] = order
        return order

    def find(self, params: dict[str, str]) -> PerpOrder | None:
        order: PerpOrder | None = None
        if params.get("origClientOrderId"):
            order = self.orders_by_cid.get(params["origClientOrderId"])
        elif (params.get("orderId") or "").isdigit():
            order = self.orders_by_id.get(int(params["orderId"]))
        return order if order is not None and order.symbol == params.get("symbol") else None

    # ----- conditional (algo) orders -----

    def create_algo(self, params: dict[str, str]) -> AlgoOrder:
        listing = self.listing(params.get("symbol"))
        side = _side(params)
        self._check_position_side(params)
        if params.get("algoType") != "CONDITIONAL":
            raise ApiError(400, -1116, "Invalid algoType.")
        order_type = params.get("type") or ""
        if order_type not in STOP_TYPES:  # not Binance's answer: STOP/TAKE_PROFIT limits are not faked
            raise ApiError(400, -1, "FakeBinanceFutures rests STOP_MARKET and TAKE_PROFIT_MARKET only")
        cid = params.get("clientAlgoId") or f"fakealgo{next(self._ids)}"
        existing = self.algo_by_cid.get(cid)
        if existing is not None and existing.open:
            raise ApiError(400, -4015, "Client order id is not valid.")
        close_position = _bool_param(params, "closePosition")
        reduce_only = _bool_param(params, "reduceOnly")
        if close_position and "reduceOnly" in params:
            raise ApiError(400, -1106, "Parameter 'reduceOnly' sent when not required.")
        if close_position and "quantity" in params:
            raise ApiError(400, -1106, "Parameter 'quantity' sent when not required.")
        qty = 0.0 if close_position else float(_decimal(params, "quantity"))
        if not close_position:
            _check_step(listing, Decimal(params["quantity"]))
        trigger = _decimal(params, "triggerPrice")
        if trigger % Decimal(str(listing.tick_size)) != 0:
            raise ApiError(400, -4014, "Price not increased by tick size.")
        algo = AlgoOrder(
            next(self._ids),
            cid,
            listing.symbol,
            side,
            order_type,
            qty,
            float(trigger),
            reduce_only,
            close_position,
            self._now_ms(),
        )
        if self._crossed(algo, listing.price):
            raise ApiError(400, -2021, "Order would immediately trigger.")
        if not (reduce_only or close_position) and qty * float(trigger) < MIN_NOTIONAL:
            raise ApiError(
                400,
                -4164,
                f"Order's notional must be no smaller than {MIN_NOTIONAL:g} (unless you choose reduce only).",
            )
        self.algo_by_cid[cid] = algo
        self.algo_by_id[algo.algo_id] = algo
        return algo

    def find_algo(self, params: dict[str, str]) -> AlgoOrder | None:
        if params.get("clientAlgoId"):
            return self.algo_by_cid.get(params["clientAlgoId"])
        if (params.get("algoId") or "").isdigit():
            return self.algo_by_id.get(int(params["algoId"]))
        return None

    @staticmethod
    def _crossed(algo: AlgoOrder, price: float) -> bool:
        """Has `price` reached the trigger? A SELL stop (closing a long) waits for the price to fall to it,
        a BUY stop (closing a short) for it to rise to it; take-profits the other way round."""
        falling = (algo.side == "SELL") == (algo.order_type == "STOP_MARKET")
        return price <= algo.trigger_price if falling else price >= algo.trigger_price

    def _trigger(self, algo: AlgoOrder, listing: Listing) -> None:
        position = self.position(listing.symbol)
        wanted = abs(position.amount) if algo.close_position else algo.quantity
        filled = self._reducible(position, algo.side, wanted, strict=False)
        order = PerpOrder(
            next(self._ids),
            f"autoclose{algo.algo_id}",
            listing.symbol,
            algo.side,
            "MARKET",
            wanted,
            filled,
            listing.price if filled > 0 else 0.0,
            "FILLED" if filled > 0 else "EXPIRED",
            "GTC",
            True,
            self._now_ms(),
        )
        self._fill(position, algo.side, filled, listing.price)
        self.orders_by_cid[order.client_order_id] = order
        self.orders_by_id[order.order_id] = order
        algo.status, algo.actual_order_id = "FINISHED", order.order_id
        algo.actual_price, algo.trigger_time_ms = listing.price, self._now_ms()

    # ----- positions and margin -----

    @staticmethod
    def _reducible(position: PerpPosition, side: str, qty: float, *, strict: bool = True) -> float:
        """What a reduce-only `side` order of `qty` may fill: at most the position, against it. -2022
        when it would open or add (`strict`), else 0."""
        against = position.amount > 0 if side == "SELL" else position.amount < 0
        if not against:
            if strict:
                raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
            return 0.0
        return min(qty, abs(position.amount))

    def _check_margin(self, listing: Listing, position: PerpPosition, side: str, qty: float) -> None:
        signed = qty if side == "BUY" else -qty
        opened = max(abs(position.amount + signed) - abs(position.amount), 0.0)
        need = opened * listing.price / self.setting(listing.symbol).leverage
        if need > self.available() + 1e-9:
            raise ApiError(400, -2019, "Margin is insufficient.")

    def _fill(self, position: PerpPosition, side: str, qty: float, price: float) -> None:
        if qty <= 0:
            return
        signed = qty if side == "BUY" else -qty
        old = position.amount
        new = round(old + signed, 8)
        if old == 0 or (old > 0) == (signed > 0):  # opens or adds: a new average entry
            position.entry_price = (abs(old) * position.entry_price + qty * price) / abs(new)
        else:  # reduces (or flips): profit on what it closed
            closed = min(qty, abs(old))
            direction = 1.0 if old > 0 else -1.0
            self.wallet = round(self.wallet + direction * closed * (price - position.entry_price), 8)
            if abs(signed) > abs(old):
                position.entry_price = price
        position.amount = new
        if new == 0:
            position.entry_price = 0.0

    def _check_position_side(self, params: dict[str, str]) -> None:
        side = params.get("positionSide") or "BOTH"
        if (side == "BOTH") == self.dual_side:
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")


def _side(params: dict[str, str]) -> str:
    side = params.get("side")
    if side not in ("BUY", "SELL"):
        raise ApiError(400, -1100, "Illegal characters found in parameter 'side'.")
    return side


def _bool_param(params: dict[str, str], name: str) -> bool:
    """Binance's boolean parameters are the strings true and false."""
    value = params.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value == "true"


def _decimal(params: dict[str, str], name: str) -> Decimal:
    text = params.get(name)
    if not text:
        raise ApiError(
            400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or "e" in text.lower() or value <= 0:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _check_step(listing: Listing, qty: Decimal) -> None:
    step = Decimal(str(listing.step_size))
    if qty < step:
        raise ApiError(400, -4003, "Quantity less than or equal to zero.")
    if qty % step != 0:
        raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
