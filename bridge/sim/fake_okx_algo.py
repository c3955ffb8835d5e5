"""FakeOkx's algo orders: conditional stop-loss orders (POST /api/v5/trade/order-algo, ordType
"conditional" with slTriggerPx), looked up with GET /trade/order-algo by algoId or algoClOrdId and
cancelled with POST /trade/cancel-algos, as OKX's docs ("Algo trading") describe and ccxt 4.5.90 sends.

A sell stop rests until `set_price` falls to its trigger, a buy stop until the price rises to it; then
it places a market order (slOrdPx "-1") or a limit order at slOrdPx that fills once the price allows,
state "effective" with the triggered order's id in `ordId` (its fill is read from GET /trade/order).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.sim.fake_okx_public import OkxListing, OkxPublicApi
from bridge.sim.fake_venue import ApiError, Listing, Order, fmt_num, json_response

ALGO_CLIENT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_ALGO_STATES = {"NEW": "live", "FILLED": "effective", "CANCELED": "canceled"}


@dataclass
class OkxAlgo(Order):
    """A conditional stop-loss algo order. `stop_price` is slTriggerPx, `limit_price` slOrdPx (0: at
    market); `size` is `sz` as sent (contracts on a swap); `triggered_id` the order it placed."""

    size: str = ""
    td_mode: str = ""
    reduce_only: bool = False
    order_client_id: str = ""  # the clOrdId sent with it, given to the order it places
    triggered_id: int | None = None
    trigger_time_ms: int = 0


class OkxAlgoOrders(OkxPublicApi):
    """The algo-order endpoints; FakeOkx supplies the fill of a triggered stop (`_fill_triggered`)."""

    _algos_by_client_id: dict[str, OkxAlgo]

    def _algo_state(self) -> dict[str, OkxAlgo]:
        store: dict[str, OkxAlgo] | None = getattr(self, "_algos_by_client_id", None)
        if store is None:
            store = self._algos_by_client_id = {}
        return store

    def algo_orders(self) -> list[OkxAlgo]:
        """Every algo order received and created, oldest first."""
        return [o for o in self._by_id.values() if isinstance(o, OkxAlgo)]

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_post("/api/v5/trade/order-algo", self._post_algo)
        router.add_get("/api/v5/trade/order-algo", self._get_algo)
        router.add_post("/api/v5/trade/cancel-algos", self._cancel_algos)

    # ----- what FakeOkx supplies -----

    def _fill_triggered(self, algo: OkxAlgo, listing: OkxListing) -> int:
        """Place and fill the order a triggered stop sends; its order id."""
        raise NotImplementedError

    def _check_stop_position(self, listing: OkxListing, algo: OkxAlgo) -> None:
        """Refuse a reduce-only stop with no position to reduce (FakeOkx: 51169)."""

    # ----- endpoints -----

    async def _post_algo(self, request: web.Request) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body = await request.text()
        params = self._json_body(body)
        if not isinstance(params, dict):
            raise ApiError(200, 51000, "Parameter error: an algo order is one object")
        await self._receive_order(
            {k: v if isinstance(v, str) else str(v).lower() for k, v in params.items()},
            received_ns,
            received_mono_ns,
        )
        self._authenticate(request, body)
        fault = self._next_fault()
        client_id = str(params.get("algoClOrdId") or "")
        try:
            self._fail_before(fault)
            algo = self._create_algo(params, client_id)
        except ApiError as exc:
            if exc.code < 51000:
                raise
            refusal = {
                "algoId": "",
                "algoClOrdId": client_id,
                "clOrdId": "",
                "sCode": str(exc.code),
                "sMsg": exc.msg,
                "tag": "",
            }
            return json_response({"code": "1", "msg": "", "data": [refusal]})
        await self._fail_after(fault)
        placed = {
            "algoId": str(algo.order_id),
            "algoClOrdId": client_id,
            "clOrdId": "",
            "sCode": "0",
            "sMsg": "",
            "tag": "",
        }
        return self.ok([placed])

    def _create_algo(self, params: dict[str, Any], client_id: str) -> OkxAlgo:
        listing = self._okx_listing(params.get("instId"))
        side = params.get("side")
        if side not in ("buy", "sell"):
            raise ApiError(200, 51000, "Parameter side error")
        if (
            params.get("ordType") != "conditional"
            or not params.get("slTriggerPx")
            or params.get("tpTriggerPx")
        ):
            raise ApiError(200, 51000, "FakeOkx takes conditional stop-loss algo orders only")
        if client_id and not ALGO_CLIENT_ID.fullmatch(client_id):
            raise ApiError(200, 51000, "Parameter algoClOrdId error")
        existing = self._algo_state().get(client_id) if client_id else None
        if existing is not None and existing.open:
            raise ApiError(200, 51016, "Duplicated clOrdId")
        td_mode = params.get("tdMode")
        if td_mode not in (("cross", "isolated") if listing.swap else ("cash", "cross")):
            raise ApiError(200, 51000, "Parameter tdMode error")
        try:
            size, trigger = float(params["sz"]), float(params["slTriggerPx"])
            limit = float(params.get("slOrdPx", "-1"))
        except (KeyError, ValueError):
            raise ApiError(200, 51000, "Parameter sz error") from None
        if size <= 0 or trigger <= 0:
            raise ApiError(200, 51000, "Parameter sz error")
        if side == "sell" and trigger >= listing.price:
            raise ApiError(200, 51280, "SL trigger price can not be higher than the last price")
        if side == "buy" and trigger <= listing.price:
            raise ApiError(200, 51278, "SL trigger price can not be lower than the last price")
        units = size * (listing.contract_value if listing.swap else 1.0)
        algo = OkxAlgo(
            next(self._ids),
            client_id,
            listing.symbol,
            side,
            0.0,
            0.0,
            0.0,
            self._now_ms(),
            order_type="conditional",
            status="NEW",
            orig_qty=units,
            stop_price=trigger,
            limit_price=0.0 if limit < 0 else limit,
            size=str(params["sz"]),
            td_mode=str(td_mode),
            reduce_only=params.get("reduceOnly") in (True, "true"),
            order_client_id=str(params.get("clOrdId") or ""),
        )
        self._check_stop_position(listing, algo)
        self._by_id[algo.order_id] = algo
        if client_id:
            self._algo_state()[client_id] = algo
        algo.info = self._algo_detail(algo)
        self.executed.append(algo.info)
        return algo

    async def _get_algo(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        self._fail_before(self._next_lookup_fault())
        algo = self._find_algo(request.query.get("algoClOrdId"), request.query.get("algoId"))
        if algo is None:
            raise ApiError(200, 51603, "Order does not exist")
        return self.ok([algo.info])

    def _find_algo(self, client_id: str | None, algo_id: str | None) -> OkxAlgo | None:
        if client_id:
            return self._algo_state().get(client_id)
        found = self._by_id.get(int(algo_id)) if algo_id and algo_id.isdigit() else None
        return found if isinstance(found, OkxAlgo) else None

    async def _cancel_algos(self, request: web.Request) -> web.Response:
        """POST trade/cancel-algos [{instId, algoId|algoClOrdId}, ...]: a live one is cancelled; any other
        is refused 51603 (OKX's "Order does not exist")."""
        body = await request.text()
        self._authenticate(request, body)
        fault = self._next_cancel_fault()
        self._fail_before(fault)
        items = self._json_body(body)
        results = []
        for item in items if isinstance(items, list) else [items]:
            algo = self._find_algo(item.get("algoClOrdId"), item.get("algoId"))
            client_id = str(item.get("algoClOrdId") or "")
            if algo is None or not algo.open or algo.symbol != item.get("instId"):
                results.append(
                    {"algoId": "", "algoClOrdId": client_id, "sCode": "51603", "sMsg": "Order does not exist"}
                )
                continue
            algo.status = "CANCELED"
            algo.info = self._algo_detail(algo)
            results.append(
                {"algoId": str(algo.order_id), "algoClOrdId": algo.client_order_id, "sCode": "0", "sMsg": ""}
            )
        await self._fail_after(fault)
        failed = all(r["sCode"] != "0" for r in results)
        return json_response({"code": "1" if failed else "0", "msg": "", "data": results})

    # ----- triggering -----

    def _price_changed(self, listing: Listing) -> None:
        """Stops trigger on either side: a sell once the price is at or below its trigger, a buy at or
        above; a triggered stop-limit fills once the price reaches its limit."""
        assert isinstance(listing, OkxListing)
        price = listing.price
        for algo in [o for o in self.open_orders(listing.symbol) if isinstance(o, OkxAlgo)]:
            sell = algo.side == "sell"
            crossed = price <= algo.stop_price if sell else price >= algo.stop_price
            if not algo.triggered and crossed:
                algo.triggered, algo.trigger_time_ms = True, self._now_ms()
            limit = algo.limit_price
            fills = algo.triggered and (limit == 0 or (price >= limit if sell else price <= limit))
            if fills:
                algo.triggered_id = self._fill_triggered(algo, listing)
                algo.status = "FILLED"
            algo.info = self._algo_detail(algo)

    def _algo_detail(self, algo: OkxAlgo) -> dict[str, Any]:
        listing = self._okx_listing(algo.symbol)
        triggered = "" if algo.triggered_id is None else str(algo.triggered_id)
        return {
            "instType": listing.inst_type,
            "instId": algo.symbol,
            "algoId": str(algo.order_id),
            "algoClOrdId": algo.client_order_id,
            "clOrdId": algo.order_client_id,
            "ordId": triggered,
            "ordIdList": [triggered] if triggered else [],
            "sz": algo.size,
            "ordType": "conditional",
            "side": algo.side,
            "posSide": "net",
            "tdMode": algo.td_mode,
            "tgtCcy": "",
            "state": _ALGO_STATES.get(algo.status, "canceled"),
            "slTriggerPx": fmt_num(algo.stop_price),
            "slTriggerPxType": "last",
            "slOrdPx": fmt_num(algo.limit_price) if algo.limit_price else "-1",
            "tpTriggerPx": "",
            "tpOrdPx": "",
            "actualSz": algo.size if triggered else "",
            "actualPx": fmt_num(listing.price) if triggered else "",
            "actualSide": "sl" if triggered else "",
            "triggerTime": str(algo.trigger_time_ms) if algo.triggered else "",
            "reduceOnly": "true" if algo.reduce_only else "false",
            "last": fmt_num(listing.price),
            "cTime": str(algo.time_ms),
            "uTime": str(self._now_ms()),
        }
