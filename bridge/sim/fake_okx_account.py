"""FakeOkx's account endpoints (OKX v5 "Trading account" and "Funding account" docs): balance, account
configuration (the position mode), leverage and margin mode per instrument, and the currency list ccxt
4.5.90 reads with keys while loading markets (GET /api/v5/asset/currencies, a signed request).
"""

from __future__ import annotations

from aiohttp import web

from bridge.sim.fake_okx_algo import OkxAlgoOrders
from bridge.sim.fake_venue import ApiError, fmt_num


class OkxAccount(OkxAlgoOrders):
    """The account's state: `balances` (free per currency), `positions` (net contracts per swap),
    `position_mode` ("net_mode" one-way, "long_short_mode" hedge) and `leverage` per swap:
    (mgnMode, lever) as POST account/set-leverage last set it."""

    balances: dict[str, float]
    positions: dict[str, float]
    position_mode: str
    leverage: dict[str, tuple[str, str]]

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_get("/api/v5/account/balance", self._balance)
        router.add_get("/api/v5/account/config", self._account_config)
        router.add_post("/api/v5/account/set-leverage", self._set_leverage)
        router.add_get("/api/v5/asset/currencies", self._currencies)

    async def _currencies(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        codes = sorted({c for item in self._listings.values() for c in (item.base, item.quote)})
        chains = [
            {
                "ccy": code,
                "name": code,
                "chain": f"{code}-{code}",
                "canDep": True,
                "canWd": True,
                "canInternal": True,
                "minWd": "0.001",
                "maxWd": "1000000",
                "minFee": "0",
                "maxFee": "0",
                "wdTickSz": "8",
                "mainNet": True,
            }
            for code in codes
        ]
        return self.ok(chains)

    # ----- account -----

    async def _balance(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        now = str(self._now_ms())
        details = [
            {
                "ccy": ccy,
                "eq": fmt_num(amount),
                "cashBal": fmt_num(amount),
                "availBal": fmt_num(amount),
                "availEq": fmt_num(amount),
                "frozenBal": "0",
                "ordFrozen": "0",
                "uTime": now,
            }
            for ccy, amount in self.balances.items()
        ]
        return self.ok([{"uTime": now, "totalEq": "0", "details": details}])

    async def _account_config(self, request: web.Request) -> web.Response:
        """GET account/config: one account, its position mode (net_mode or long_short_mode)."""
        self._authenticate(request, "")
        config = {
            "uid": "44705892343619584",
            "mainUid": "44705892343619584",
            "acctLv": "2",
            "posMode": self.position_mode,
            "autoLoan": False,
            "greeksType": "PA",
            "level": "Lv1",
            "ctIsoMode": "automatic",
            "mgnIsoMode": "automatic",
            "label": "bridge",
            "perm": "read_only,trade",
        }
        return self.ok([config])

    async def _set_leverage(self, request: web.Request) -> web.Response:
        """POST account/set-leverage {instId, lever, mgnMode[, posSide]}: a swap's margin mode and leverage."""
        body = await request.text()
        self._authenticate(request, body)
        params = self._json_body(body)
        listing = self._okx_listing(params.get("instId"))
        mode, lever = params.get("mgnMode"), str(params.get("lever", ""))
        if mode not in ("cross", "isolated"):
            raise ApiError(200, 51000, "Parameter mgnMode error")
        if not lever.isdigit() or not 1 <= int(lever) <= listing.max_leverage:
            raise ApiError(200, 59102, "Leverage exceeds the maximum leverage. Please adjust the leverage.")
        self.leverage[listing.symbol] = (mode, lever)
        answer = {
            "instId": listing.symbol,
            "lever": lever,
            "mgnMode": mode,
            "posSide": params.get("posSide", ""),
        }
        return self.ok([answer])
