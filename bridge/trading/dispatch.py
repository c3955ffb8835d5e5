"""Fans announcements out from the feed queue to one queue per strategy, after dropping duplicates.

Each strategy has its own `StrategyRunner`, and each announcement its own task there (up to the
strategy's `max_concurrent` at once): an exception or a slow order affects only that announcement;
neither the strategy's next announcement, the other strategies nor the feed reader notice.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from bridge.errors import BridgeError
from bridge.feed import metrics as feed_metrics
from bridge.feed.codec import Announcement
from bridge.trading import metrics
from bridge.trading.admission import ahead_s, cap_tickers, event_time_problem
from bridge.trading.arrivals import Arrivals
from bridge.trading.journal import Journal
from bridge.trading.strategy import Context, Strategy

log = structlog.get_logger(__name__)


async def call_hook(strategy: str, hook: str, call: Awaitable[None], *, within: float | None) -> bool:
    """Run a strategy's lifecycle hook (`on_start`, `on_stop`) behind the plugin safety wrapper: True if
    it returned, False (logged `strategy.hook_failed`) if it raised or overran `within` seconds. A BridgeError
    (a fatal condition, e.g. a config error the plugin found) and cancellation still propagate."""
    try:
        await asyncio.wait_for(call, within)
    except asyncio.CancelledError:
        raise
    except BridgeError:
        raise
    except Exception:  # plugin code
        log.exception("strategy.hook_failed", strategy=strategy, hook=hook)
        return False
    return True


DEFAULT_MAX_CONCURRENT = 8  # the default of `strategies[].max_concurrent` (bridge.config.StrategyConfig)
DEFAULT_STRATEGY_DEADLINE = 30.0  # the default of `trading.strategy_deadline` (bridge.config.TradingConfig)
# Announcements a strategy's runner holds while its max_concurrent handlers are busy, at most: a bound
# on memory if a strategy hangs (its deadline only reports a late handler). Past it: dropped, logged.
MAX_WAITING = 10_000


@dataclass(slots=True)
class _Handling:
    """One announcement being handled: its key, when it started (loop clock), its deadline timer."""

    key: str
    started: float
    timer: asyncio.TimerHandle
    overdue: bool = False


class StrategyRunner:
    """One strategy's announcements: each is handled in a task of its own, at most `max_concurrent` at
    once, so an order that hangs holds up no other announcement. Past the bound, announcements wait in
    `queue`, in arrival order, and start in that order as running ones finish; none is dropped.

    Hand announcements over with `put()`. `queue.join()` returns once every announcement handed over
    is fully handled (its task has ended); `idle` is set only while nothing is queued or running.
    Tasks start only while `run()` runs; cancelling `run()` cancels those in flight and waits for them.

    A handler still running `deadline` seconds after it started (`trading.strategy_deadline`) is
    reported, once: the warning `strategy.deadline_exceeded`, the counter
    `bridge_strategy_deadline_exceeded_total{strategy}`, the gauge `bridge_strategy_stuck_handlers`,
    and `stuck` (read by the health snapshot and the status line) until it ends, when
    `strategy.finished_late` says how long it took. It is **not cancelled** and keeps its slot:
    - A handler may be stuck inside `ctx.buy`/`ctx.sell`. The order path journals the intent, then
      awaits the venue's answer and, for an entry, records the fill that its exit plan watches; none
      of that is shielded from cancellation. Cancelled there, the order may be on the venue with no
      outcome recorded, no look-up started, its risk reservation held and its position without exits
      until a restart reconciles it: a real position nobody sells is worse than a stuck handler.
      Nothing here can tell a handler stuck in an order from one stuck in its own await.
    - Freeing the slot but letting the task run would break `max_concurrent: 1`, the documented way
      to get one announcement at a time for a strategy that keeps state.
    So a stuck strategy is made loud (once per handler in the log, on every status line and /health,
    countable and alertable in Prometheus) and the operator decides; a restart (shutdown cancels what
    is in flight; the journal's look-ups settle unknown orders at the next start) frees it.
    """

    def __init__(
        self,
        strategy: Strategy,
        ctx: Context,
        *,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        deadline: float = DEFAULT_STRATEGY_DEADLINE,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be positive, got {max_concurrent}")
        if not (math.isfinite(deadline) and deadline > 0):
            raise ValueError(f"deadline must be a positive number of seconds, got {deadline}")
        self.strategy = strategy
        self.ctx = ctx
        self.max_concurrent = max_concurrent
        self.deadline = deadline
        # waiting for a free slot; past MAX_WAITING a new one is dropped (logged, counted)
        self.queue: asyncio.Queue[Announcement] = asyncio.Queue(MAX_WAITING)
        self.handled = 0
        self.errors = 0
        self.deadline_exceeded = 0  # handlers that ran past the deadline, ever
        self.idle = asyncio.Event()
        self.idle.set()
        # The references that keep the tasks alive, with what each is handling.
        self._running: dict[asyncio.Task[None], _Handling] = {}
        self._active = False  # run() is running: tasks may start

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def running(self) -> int:
        """Announcements being handled now (at most `max_concurrent`)."""
        return len(self._running)

    @property
    def stuck(self) -> tuple[str, ...]:
        """The keys of the announcements whose handlers are running past the deadline now, oldest
        first."""
        return tuple(h.key for h in self._running.values() if h.overdue)

    def put(self, announcement: Announcement) -> None:
        """Hand an announcement to this strategy: it starts now if a slot is free (its task runs at
        the loop's next step, as the runner's own task used to), else it waits its turn. Never
        blocks; past MAX_WAITING announcements waiting, a new one is dropped (`strategy.dropped`, an
        error, and bridge_strategy_dropped_total)."""
        self.idle.clear()
        try:
            self.queue.put_nowait(announcement)
        except asyncio.QueueFull:
            self._dropped(announcement)
        self._start_waiting()

    def _dropped(self, announcement: Announcement) -> None:
        metrics.STRATEGY_DROPPED.labels(self.name).inc()
        log.error(
            "strategy.dropped",
            strategy=self.name,
            announcement=announcement.key,
            reason="queue_full",
            waiting=self.queue.qsize(),
            running=len(self._running),
        )

    async def run(self) -> None:
        """Start what is queued, then whatever arrives, until cancelled."""
        self._active = True
        try:
            self._start_waiting()
            await asyncio.get_running_loop().create_future()  # never resolves: put() starts tasks
        finally:  # cancelled (shutdown, end of replay): nothing in flight outlives the runner
            self._active = False
            tasks = list(self._running)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start_waiting(self) -> None:
        # Tasks run in creation order, so announcements start in arrival order.
        loop = asyncio.get_running_loop() if self._active else None
        while loop is not None and len(self._running) < self.max_concurrent and not self.queue.empty():
            announcement = self.queue.get_nowait()
            task = asyncio.create_task(
                self._handle(announcement), name=f"strategy:{self.name}:{announcement.key}"
            )
            started = loop.time()
            timer = loop.call_at(started + self.deadline, self._overran, task)
            self._running[task] = _Handling(announcement.key, started, timer)
            task.add_done_callback(self._finished)

    def _overran(self, task: asyncio.Task[None]) -> None:
        """The deadline timer of `task` fired: report it (once; it is not cancelled, see the class)."""
        handling = self._running.get(task)
        if handling is None or task.done():
            return
        handling.overdue = True
        self.deadline_exceeded += 1
        metrics.STRATEGY_DEADLINE_EXCEEDED.labels(self.name).inc()
        metrics.STRATEGY_STUCK.labels(self.name).set(len(self.stuck))
        log.warning(
            "strategy.deadline_exceeded",
            strategy=self.name,
            announcement=handling.key,
            elapsed_s=round(asyncio.get_running_loop().time() - handling.started, 3),
            deadline_s=self.deadline,
            running=len(self._running),
            max_concurrent=self.max_concurrent,
            queued=self.queue.qsize(),
        )

    async def _handle(self, announcement: Announcement) -> None:
        try:
            await self.strategy.on_announcement(announcement, self.ctx.bind(announcement))
        except asyncio.CancelledError:
            raise
        except Exception:  # plugin code: isolate it, whatever it raises
            self.errors += 1
            metrics.STRATEGY_ERRORS.labels(self.name).inc()
            log.exception("strategy.failed", strategy=self.name, announcement=announcement.key)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A handling task ended (returned, failed behind the wrapper, or was cancelled)."""
        handling = self._running.pop(task, None)
        if handling is not None:
            handling.timer.cancel()
            if handling.overdue:
                metrics.STRATEGY_STUCK.labels(self.name).set(len(self.stuck))
                log.info(
                    "strategy.finished_late",
                    strategy=self.name,
                    announcement=handling.key,
                    elapsed_s=round(asyncio.get_running_loop().time() - handling.started, 3),
                    cancelled=task.cancelled(),
                )
        self.handled += 1
        self.queue.task_done()
        self._start_waiting()
        if not self._running and self.queue.empty():
            self.idle.set()


class Dispatcher:
    """Admits announcements (refusing impossible event times, capping tickers), drops duplicates, and
    hands each new one to every strategy."""

    def __init__(
        self,
        source: asyncio.Queue[Announcement],
        runners: list[StrategyRunner],
        journal: Journal,
        *,
        max_clock_skew: float = 2.0,
        max_tickers: int = 20,
        clock_ns: Callable[[], int] = time.time_ns,
        link_ok: Callable[[str | None], bool] | None = None,
    ) -> None:
        self._source = source
        # Whether a feed link is up (the gate's view); an announcement a link brings while it is not
        # is refused, and the copy from a link that is up can still trade.
        self._link_ok = link_ok
        self.arrivals = Arrivals()
        self._runners = runners
        self._journal = journal
        self._max_skew_s = max_clock_skew
        self._max_tickers = max_tickers
        self._clock_ns = clock_ns
        self.seen = 0
        self.duplicates = 0
        self.refused = 0

    async def run(self) -> None:
        while True:
            announcement = await self._source.get()
            feed_metrics.QUEUE_DEPTH.set(self._source.qsize())
            try:
                self.dispatch(announcement)
            finally:
                self._source.task_done()

    def admit(self, a: Announcement) -> Announcement | None:
        """The announcement as strategies may see it, or None (logged, counted) if it must not trade:
        an event time further in the future than trading.max_clock_skew (the publisher's clock or the
        frame is wrong: its age would read as fresh for too long). Tickers past
        trading.max_tickers_per_announcement are dropped with one log line."""
        now_ns = self._clock_ns()
        if (problem := event_time_problem(a, now_ns, self._max_skew_s)) is not None:
            self.refused += 1
            metrics.REFUSED.labels(problem).inc()
            log.warning(
                "announcement.refused",
                reason=problem,
                key=a.key,
                publisher=a.publisher,
                ahead_s=ahead_s(a, now_ns),
            )
            return None
        capped = cap_tickers(a, self._max_tickers)
        if capped.refused:
            metrics.REFUSED.labels("too_many_tickers").inc()
            log.warning(
                "announcement.tickers_capped",
                key=a.key,
                publisher=a.publisher,
                kept=list(capped.kept),
                refused=capped.refused,
            )
        return capped.announcement

    def dispatch(self, a: Announcement) -> bool:
        """Hand a new announcement to every strategy; False (and logged) for a duplicate or a refusal."""
        admitted = self.admit(a)
        if admitted is None:
            return False
        a = admitted
        if a.link is not None and self._link_ok is not None and not self._link_ok(a.link):
            self.refused += 1
            metrics.REFUSED.labels("link_unhealthy").inc()
            log.warning("announcement.refused", reason="link_unhealthy", key=a.key, link=a.link)
            return False
        if not self._journal.record_announcement(a):
            self.duplicates += 1
            metrics.DUPLICATES.inc()
            first, lag_s = self.arrivals.copy_of(a)
            log.info(
                "announcement.duplicate",
                key=a.key,
                publisher=a.publisher,
                tickers=list(a.tickers),
                link=a.link,
                won_by=None if first is None else first.link,
                lag_ms=None if lag_s is None else round(lag_s * 1000, 3),
            )
            return False
        if (earlier := self.arrivals.updated_title_of(a)) is not None:
            self.duplicates += 1
            metrics.DUPLICATES.inc()
            log.warning(
                "announcement.title_updated",
                key=a.key,
                title=a.title,
                earlier_key=earlier.key,
                earlier_title=earlier.title,
                link=a.link,
                action="not traded again",
            )
            return False
        self.seen += 1
        for runner in self._runners:
            runner.put(a)
        self.arrivals.first(a)  # bookkeeping for the copies to come: after the strategies have it
        return True
