"""Positions checked against what the venue says the account holds (live only), at start and every few
minutes: a position sold by hand, withdrawn or liquidated is closed in the journal (`external`) instead
of being sold again and again into an "insufficient balance" refusal.

What the account holds of a coin is its free balance plus what bridge's own resting stops lock (the
stop was placed for the position's remaining amount). Several positions in one coin on one venue are
compared together; when the account holds under a tenth of what they hold, they are closed; a smaller
shortfall is logged and left to the exits, which then sell what is there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog

from bridge.errors import ExchangeError
from bridge.trading.model import Position
from bridge.venues.exchange import Exchange

log = structlog.get_logger(__name__)

RECONCILE_INTERVAL_S = 300.0
# Under this fraction of what the positions hold, they are gone (sold by hand, liquidated).
GONE_BELOW = 0.1
# A shortfall under this fraction is fees and rounding, not worth a line.
SHORT_TOLERANCE = 0.01


async def vanished(positions: Iterable[Position], exchanges: Mapping[str, Exchange]) -> dict[str, str]:
    """Entry client id -> why, for open positions the venue's balances say are gone."""
    by_coin: dict[tuple[str, str], list[Position]] = {}
    for p in positions:
        if p.state == "open" and p.remaining > 0:
            by_coin.setdefault((p.exchange, p.symbol.split("/", 1)[0]), []).append(p)
    gone: dict[str, str] = {}
    balances: dict[str, dict[str, float] | None] = {}
    for (venue, coin), group in by_coin.items():
        ex = exchanges.get(venue)
        if ex is None or not ex.started:  # a venue down at boot: checked once it is up
            continue
        if venue not in balances:
            try:
                balances[venue] = await ex.fetch_free_balances()
            except ExchangeError as exc:
                log.warning("position.reconcile_failed", exchange=venue, error=str(exc))
                balances[venue] = None
        free = balances[venue]
        if free is None:
            continue
        need = sum(p.remaining for p in group)
        held = free.get(coin, 0.0) + sum(p.remaining for p in group if p.stop_client_order_id is not None)
        if held < need * GONE_BELOW:
            for p in group:
                gone[p.client_order_id] = f"account holds {held:.8g} {coin} of {need:.8g}"
        elif held < need * (1 - SHORT_TOLERANCE):
            log.warning(
                "position.balance_short",
                exchange=venue,
                coin=coin,
                held=held,
                positions_hold=need,
                hint="sold in part outside bridge? the exits sell what the account holds",
            )
    return gone
