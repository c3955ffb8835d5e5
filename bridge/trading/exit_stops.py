"""The exit manager's resting stops (`stop_on_exchange`): when to place one (backing off after refusals,
given up with an alert after MAX_STOP_FAILURES: the daemon's own stop-loss check still exits), and when
to look a resting one up (when the price is near its trigger, else once a minute). The requests are
bridge.trading.exit_orders'."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from bridge.trading.exit_alerts import ExitAlerts
from bridge.trading.exit_failures import MAX_STOP_FAILURES, ExitFailures
from bridge.trading.exit_orders import ExitOrders
from bridge.trading.exit_rules import is_short, stop_price
from bridge.trading.model import Position

log = structlog.get_logger("bridge.trading.exits")  # these events have always been the exit manager's

# The resting stop is looked up when the price is this close to its trigger, else once a minute.
STOP_CHECK_NEAR = 0.02
STOP_CHECK_INTERVAL_S = 60.0


class RestingStops:
    def __init__(
        self, orders: ExitOrders, failures: ExitFailures, alerts: ExitAlerts, monotonic: Callable[[], float]
    ) -> None:
        self._orders = orders
        self._failures = failures
        self._alerts = alerts
        self._monotonic = monotonic
        self._checked: dict[str, float] = {}  # entry cid -> when its stop was last looked up

    def check_due(self, position: Position, price: float | None) -> bool:
        """Should the resting stop be looked up now: the price is near its trigger (under it by less than
        STOP_CHECK_NEAR for a long, over it for a short), unknown, or a minute has passed?"""
        trigger = stop_price(position)
        now = self._monotonic()
        if price is None or trigger is None:
            near = True
        elif is_short(position):  # a short's stop is above: near once the price rose close to it
            near = price >= trigger * (1 - STOP_CHECK_NEAR)
        else:
            near = price <= trigger * (1 + STOP_CHECK_NEAR)
        if near or now - self._checked.get(position.client_order_id, 0.0) >= STOP_CHECK_INTERVAL_S:
            self._checked[position.client_order_id] = now
            return True
        return False

    async def place(self, position: Position) -> None:
        """Rest the stop, backing off after refusals (see exit_failures); after MAX_STOP_FAILURES the
        daemon's own stop-loss check is the only stop, alerted once. Nothing is sent while a halt stops
        exits on the venue (a 429's backoff, a rejected key, an unwritable journal)."""
        cid = position.client_order_id
        if not self._failures.stop_due(cid) or self._orders.blockers(position.exchange):
            return
        if await self._orders.place_stop(position):
            self._failures.stop_placed(cid)
            return
        if self._failures.stop_failed(cid) >= MAX_STOP_FAILURES:
            self._alerts.exit_failed(position.exchange, position.symbol, None, "resting_stop_not_placed")
            log.error(
                "exit.stop_given_up",
                symbol=position.symbol,
                entry_client_order_id=cid,
                action="no stop rests on the exchange; the daemon's own stop-loss check still exits",
            )

    def forget(self, cid: str) -> None:
        self._checked.pop(cid, None)
