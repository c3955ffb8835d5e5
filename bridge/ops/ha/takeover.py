"""What a standby records, and what it does with it the moment it becomes leader, before it arms.

A standby runs the whole order path up to the last gate check and keeps each order it would have sent
(`ha.would_send`, bridge_ha_would_send_total). At takeover each one is looked up at its venue by its
deterministic client id: found, the old leader sent it (journaled here with its fill and exit plan, a
real position); not found and its announcement still within trading.max_event_age, it is sent now (the
look-up was the look-before-send); not found and older, it was never sent and is dropped. Open positions'
current exit attempts are looked up too, so an exit the old leader sent is found, never doubled.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from prometheus_client import Counter

from bridge.errors import ExchangeError, TradingHalted
from bridge.telemetry import REGISTRY
from bridge.trading.contracts import is_contract
from bridge.trading.exit_orders import ExitOrders
from bridge.trading.exit_rules import exit_side
from bridge.trading.journal import Journal
from bridge.trading.model import Announcement, ExitPlan, OrderIntent, Position
from bridge.trading.orders import OrderRouter
from bridge.trading.outcomes import is_expired
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest, OrderResult

log = structlog.get_logger(__name__)

WOULD_SEND = Counter(
    "bridge_ha_would_send_total",
    "Orders a standby would have sent (compare with the leader's bridge_orders_total)",
    ["exchange"],
    registry=REGISTRY,
)
TAKEOVER = Counter(
    "bridge_ha_takeover_orders_total",
    "A new leader's would-be orders by what the venue said: adopted, sent, never_sent, unknown",
    ["outcome"],
    registry=REGISTRY,
)
MAX_EXIT_ATTEMPTS = 10  # exit attempts of one position looked up at takeover, at most
MAX_HELD = 1000  # would-be orders kept (oldest dropped first): far more than one burst of listings


@dataclass(frozen=True, slots=True)
class WouldBe:
    intent: OrderIntent
    announcement: Announcement


class StandbyLedger:
    """The would-be orders of this host while it is not the leader (OrderRouter.on_held)."""

    def __init__(self) -> None:
        self._held: OrderedDict[str, WouldBe] = OrderedDict()

    def hold(self, intent: OrderIntent, announcement: Announcement) -> None:
        cid = intent.client_order_id
        if cid in self._held:
            return
        self._held[cid] = WouldBe(intent, announcement)
        if len(self._held) > MAX_HELD:
            self._held.popitem(last=False)
        WOULD_SEND.labels(intent.exchange).inc()
        log.info(
            "ha.would_send",
            strategy=intent.strategy,
            exchange=intent.exchange,
            symbol=intent.symbol,
            side=intent.side,
            cost=intent.cost,
            amount=intent.amount,
            client_order_id=cid,
            announcement_key=intent.announcement_key,
        )

    def __len__(self) -> int:
        return len(self._held)

    def drain(self) -> list[WouldBe]:
        items = list(self._held.values())
        self._held.clear()
        return items


class Takeover:
    """The new leader's reconciliation; `__call__(lease)` is Leadership's takeover hook."""

    def __init__(
        self,
        *,
        ledger: StandbyLedger,
        journal: Journal,
        router: OrderRouter,
        exits: ExitOrders | None,
        exchanges: Mapping[str, Exchange],
        max_event_age: float,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._ledger = ledger
        self._journal = journal
        self._router = router
        self._exits = exits
        self._exchanges = exchanges
        self._max_age_ms = max_event_age * 1000
        self._clock_ns = clock_ns
        self._later: set[asyncio.Task[None]] = set()

    async def __call__(self, lease: int) -> None:
        """Before arming: open positions' exits, then every would-be order young enough to be sent
        (those held while this runs too: the gate opens right after the last pass). Older ones can only
        be adopted, never sent: they are looked up after arming, in the background."""
        for position in self._journal.open_positions():
            await self._find_exit(position)
        older: list[WouldBe] = []
        while items := self._ledger.drain():
            for item in items:
                if self._young(item):
                    await self._settle(item, lease)
                else:
                    older.append(item)
        if older:
            task = asyncio.create_task(self._adopt(older, lease), name="ha-adopt")
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def _adopt(self, items: list[WouldBe], lease: int) -> None:
        for item in items:
            try:
                await self._settle(item, lease)
            except TradingHalted:
                return  # the lease is gone: the next leader looks them up
            except Exception:  # one bad look-up must not stop the others
                log.exception("ha.adopt_failed", client_order_id=item.intent.client_order_id)

    def _young(self, item: WouldBe) -> bool:
        age_ms = item.announcement.age_ms(self._clock_ns())
        return age_ms is not None and age_ms <= self._max_age_ms

    async def _settle(self, item: WouldBe, lease: int) -> None:
        intent, cid = item.intent, item.intent.client_order_id
        ex = self._exchanges.get(intent.exchange)
        if ex is None or self._journal.get(cid) is not None:
            return  # not ours to send, or journaled already (this host sent it when it led)
        try:
            found = await ex.fetch_order_by_client_id(intent.symbol, cid)
        except ExchangeError as exc:
            TAKEOVER.labels("unknown").inc()
            log.error(  # noqa: TRY400 - one line: the venue did not answer; no traceback to show
                "ha.takeover_lookup_failed",
                exchange=ex.id,
                client_order_id=cid,
                error=str(exc),
                action="not sent: whether the old leader sent it is unknown",
            )
            return
        fields = {"exchange": ex.id, "symbol": intent.symbol, "client_order_id": cid, "lease": lease}
        if found is not None:
            # Its exits the old leader sent, looked up before the position exists here: from the moment
            # it does, the exit manager may act on it, and must find them journaled.
            exits = [] if intent.plan is None else await self._sent_exits(_opened(intent, found))
            if not self._journal.reserve(intent):  # TradingHalted (lease lost) ends the takeover here
                return
            if is_expired(found):
                self._router.book.expired(intent, found)
            else:
                self._router.book.record_fill(intent, "placed", found)
            self._journal_exits(exits)
            TAKEOVER.labels("adopted").inc()
            log.warning(
                "ha.takeover_adopted",
                order_id=found.order_id,
                filled=found.filled,
                exits=len(exits),
                **fields,
            )
            return
        age_ms = item.announcement.age_ms(self._clock_ns())
        if not self._young(item):
            TAKEOVER.labels("never_sent").inc()
            log.info("ha.takeover_never_sent", age_ms=age_ms, **fields)
            return
        if not self._journal.reserve(intent):
            return
        market = ex.market(intent.symbol)
        request = OrderRequest(
            symbol=intent.symbol,
            side=intent.side,
            client_order_id=cid,
            cost=intent.cost,
            amount=intent.amount,
            limit_price=intent.limit_price,
            received_mono_ns=item.announcement.received_mono_ns,
            reduce_only=market is not None
            and is_contract(market)
            and intent.side == "sell"
            and intent.plan is None,
        )
        TAKEOVER.labels("sent").inc()
        log.warning("ha.takeover_sending", age_ms=age_ms, **fields)
        outcome = await self._router._send(
            ex, request, intent, item.announcement
        )  # the one send path (journaled above)
        self._router.emit(outcome)

    async def _find_exit(self, position: Position) -> None:
        """An open position's exit attempts the old leader sent (even unjournaled), journaled here."""
        self._journal_exits(await self._sent_exits(position))

    async def _sent_exits(self, position: Position) -> list[OrderIntent]:
        """The position's exit attempts found at the venue by client id, from its next attempt on, as
        intents to journal; they stop at the first attempt the venue does not know."""
        ex = self._exchanges.get(position.exchange)
        if ex is None or self._exits is None:
            return []
        found_exits: list[OrderIntent] = []
        for attempt in range(position.attempts, position.attempts + MAX_EXIT_ATTEMPTS):
            cid = self._exits.exit_id(position, "exit", attempt)
            if self._journal.get(cid) is not None:
                continue
            try:
                found = await ex.fetch_order_by_client_id(position.symbol, cid)
            except ExchangeError as exc:
                log.warning("ha.exit_lookup_failed", exchange=ex.id, client_order_id=cid, error=str(exc))
                break
            if found is None:
                break
            log.warning(
                "ha.takeover_exit_found", exchange=ex.id, client_order_id=cid, order_id=found.order_id
            )
            found_exits.append(
                OrderIntent(
                    cid,
                    None,
                    position.strategy,
                    position.exchange,
                    position.symbol,
                    exit_side(position),
                    position.quote,
                    None,
                    found.filled or position.remaining,
                    False,
                    exit_of=position.client_order_id,
                )
            )
        return found_exits

    def _journal_exits(self, intents: list[OrderIntent]) -> None:
        """Journaled as `sending`: the exit manager settles each by look-up before it sends another."""
        for intent in intents:
            self._journal.reserve(intent)


def _opened(intent: OrderIntent, found: OrderResult) -> Position:
    """The position an adopted entry opens, as far as its exits' client ids need it (attempt 0 on)."""
    return Position(
        intent.client_order_id,
        intent.strategy,
        intent.exchange,
        intent.symbol,
        found.filled or 0.0,
        found.average,
        0,
        intent.plan or ExitPlan(),
        quote=intent.quote,
        side=intent.side,
    )
