"""Bringing the venues up: an exchange's warm-up with the shared backoff; a venue still down after the
first attempts is halted (`venue_unavailable:NAME`) and retried in the background while the others
trade; and the look-up of orders an earlier run left open (`sending`/`unknown`), which are never resent."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import structlog

from bridge.aio import Sleep, sleep_or_stop
from bridge.errors import BridgeError, ConfigError, ExchangeAuthError, ExchangeError
from bridge.retry import backoff_delay
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.model import OPEN_STATES
from bridge.trading.orders import OrderRouter
from bridge.venues.exchange import Exchange

log = structlog.get_logger(__name__)

EXCHANGE_START_ATTEMPTS = 3
RETRY_MAX_DELAY_S = 60.0  # a venue down at boot is retried at least once a minute


async def start_exchange(
    ex: Exchange, *, check_keys: bool, sleep: Sleep, attempts: int = EXCHANGE_START_ATTEMPTS
) -> None:
    """Start one exchange, retrying a transient failure with the shared backoff; a rejected key
    (ExchangeAuthError) and the last attempt's error raise."""
    for attempt in range(1, attempts + 1):
        try:
            await ex.start(check_keys=check_keys)
        except ExchangeAuthError:
            raise
        except ExchangeError as exc:
            if attempt == attempts:
                raise
            delay = start_retry_delay(attempt, exc)
            log.warning(
                "exchange.start_failed", exchange=ex.id, attempt=attempt, retry_in=delay, error=str(exc)
            )
            await sleep(delay)
        else:
            return


def start_retry_delay(attempt: int, exc: BridgeError, cap: float = 30.0) -> float:
    """Honour a rate limit's Retry-After; otherwise the shared backoff (2 s, 4 s, ... up to `cap`)."""
    return max(
        backoff_delay(attempt, 2.0, cap, random.random()),  # noqa: S311 - jitter
        getattr(exc, "retry_after", None) or 0.0,
    )


class VenueStarter:
    """Starts every configured exchange at boot without letting one venue's outage stop the daemon.

    `start_all()` gives each venue EXCHANGE_START_ATTEMPTS tries. One still failing is halted
    (`venue_unavailable:NAME`: no entries, no exits there) and left to `run()`, which retries it with
    the shared backoff until it starts, then calls `on_up` (reconcile its orders, refresh its markets)
    and lifts the halt. A rejected key is not retried: every venue's rejected raises ExchangeAuthError
    (exit 77), as before; one venue's halts that venue (`credentials_rejected:NAME`). A ConfigError
    (an unknown exchange id, hedge mode) raises at once (exit 78)."""

    def __init__(
        self,
        exchanges: Mapping[str, Exchange],
        gate: TradingGate,
        *,
        check_keys: bool,
        sleep: Sleep,
        attempts: int = EXCHANGE_START_ATTEMPTS,
    ) -> None:
        self._exchanges = exchanges
        self._gate = gate
        self._check_keys = check_keys
        self._sleep = sleep
        self._attempts = attempts
        self.down: dict[str, BridgeError] = {}  # venue -> the last start error, while it is retried

    async def start_all(self) -> None:
        names = list(self._exchanges)
        outcomes = await asyncio.gather(*(self._first_start(self._exchanges[n]) for n in names))
        rejected = {
            n: exc for n, exc in zip(names, outcomes, strict=True) if isinstance(exc, ExchangeAuthError)
        }
        if rejected and len(rejected) == len(names):
            raise next(iter(rejected.values()))
        for name in rejected:
            log.error("exchange.key_rejected_at_start", exchange=name, error=str(rejected[name]))
            self._gate.halt("credentials_rejected", venue=name)

    async def _first_start(self, ex: Exchange) -> ExchangeAuthError | None:
        try:
            await start_exchange(ex, check_keys=self._check_keys, sleep=self._sleep, attempts=self._attempts)
        except ExchangeAuthError as exc:
            return exc
        except ExchangeError as exc:
            self.down[ex.id] = exc
        else:
            return None
        log.error(
            "exchange.unavailable",
            exchange=ex.id,
            attempts=self._attempts,
            error=str(self.down[ex.id]),
            action="halted (venue_unavailable); retried in the background, the other venues trade",
        )
        self._gate.halt("venue_unavailable", venue=ex.id)
        return None

    async def run(self, stop: asyncio.Event, on_up: Callable[[Exchange], Awaitable[None]]) -> None:
        """Retry every venue that was down at boot until it starts or `stop` is set."""
        await asyncio.gather(*(self._retry(self._exchanges[name], stop, on_up) for name in list(self.down)))

    async def _retry(
        self, ex: Exchange, stop: asyncio.Event, on_up: Callable[[Exchange], Awaitable[None]]
    ) -> None:
        attempt = self._attempts
        while True:
            delay = start_retry_delay(attempt, self.down[ex.id], cap=RETRY_MAX_DELAY_S)
            if await sleep_or_stop(self._sleep, delay, stop):
                return
            attempt += 1
            outcome = await self._try_start(ex)
            if outcome == "up":
                break
            log.warning("exchange.start_failed", exchange=ex.id, attempt=attempt, error=str(self.down[ex.id]))
            if outcome == "given_up":
                return
        self.down.pop(ex.id, None)
        try:
            await on_up(ex)  # its open orders looked up before anything may be sent there
        finally:
            self._gate.resume("venue_unavailable", venue=ex.id)
        log.info("exchange.recovered", exchange=ex.id, attempts=attempt)

    async def _try_start(self, ex: Exchange) -> Literal["up", "down", "given_up"]:
        """One more start. A rejected key is not retried: the venue's halt becomes
        `credentials_rejected` (a new key and a restart are needed)."""
        try:
            await ex.start(check_keys=self._check_keys)
        except ExchangeAuthError as exc:
            self.down[ex.id] = exc
            self._gate.halt("credentials_rejected", venue=ex.id)
            self._gate.resume("venue_unavailable", venue=ex.id)
            return "given_up"
        except ExchangeError as exc:
            self.down[ex.id] = exc
            return "down"
        except ConfigError as exc:  # only a live venue reveals it (hedge mode): halted, not retried
            self.down[ex.id] = exc
            return "given_up"
        return "up"


async def reconcile_open_orders(
    journal: Journal, router: OrderRouter, exchanges: dict[str, Exchange], *, venue: str | None = None
) -> None:
    """Orders left `sending` or `unknown` by an earlier run (crash, kill -9) are looked up by client
    id before anything else could touch them. They are never resent. `venue` limits it to one exchange
    (one that came up late)."""
    for record in journal.orders(states=OPEN_STATES):
        if venue is not None and record.intent.exchange != venue:
            continue
        ex = exchanges.get(record.intent.exchange)
        if ex is not None and not ex.started:
            continue  # a venue down at boot: its orders are looked up once it starts
        if ex is None:
            log.error(
                "order.unresolved",
                client_order_id=record.intent.client_order_id,
                reason="exchange_not_configured",
            )
            continue
        log.warning("order.reconciling", client_order_id=record.intent.client_order_id, state=record.state)
        await router.reconcile(ex, record.intent)
