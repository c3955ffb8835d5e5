"""The daemon's life in three plain steps: `startup()` (journal, exchanges warm, strategies started),
`main_loop()` (feed supervisor, dispatcher, strategy tasks; exits-only mode while positions outlive a
dead feed key), `shutdown()` (halt, close everything, bounded in time). Fatal conditions surface as
BridgeError subclasses carrying their exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

import structlog

from bridge import remote
from bridge.aio import Sleep, hand_over_gil_quickly, settle_heap
from bridge.config import Config
from bridge.daemon_exits import run_exits_only
from bridge.daemon_reload import Reloader
from bridge.daemon_start import VenueStarter, reconcile_open_orders
from bridge.errors import BridgeError, ConfigError, CredentialsRejected
from bridge.feed.client import MAX_QUEUED
from bridge.feed.codec import Announcement
from bridge.feed.links import FeedLinks
from bridge.feed.recorder import Recorder
from bridge.ops.control import ControlServer, socket_path
from bridge.ops.ha import Pair
from bridge.ops.health import HealthServer, Mode, build_snapshot, run_status_log
from bridge.ops.loop_lag import LoopLagProbe
from bridge.ops.notify import Notifier
from bridge.ops.sdnotify import SystemdNotifier, run_watchdog
from bridge.system import TradingSystem, assemble, market_snapshot, stop_strategies
from bridge.trading.clock import ClockWatch
from bridge.trading.dispatch import Dispatcher, StrategyRunner
from bridge.trading.exits import ExitManager
from bridge.trading.gate import LinkStatus, TradingGate
from bridge.trading.halts import split_key
from bridge.trading.journal import Journal
from bridge.trading.journal_watch import JournalWatch
from bridge.trading.model import OrderOutcome
from bridge.trading.orders import OrderRouter
from bridge.trading.plugins import load_strategies
from bridge.trading.strategy import Strategy
from bridge.venues.exchange import Exchange

log = structlog.get_logger(__name__)

STRATEGY_HOOK_TIMEOUT = 2.0
DRAIN_TIMEOUT = 2.0


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        strategies: list[Strategy] | None = None,
        sleep: Sleep = asyncio.sleep,
        recorder: Recorder | None = None,
        settle_heap: bool = False,
    ) -> None:
        self.config = config
        self.recorder = recorder
        # `bridge run` (one daemon per process): hide the warm heap from the collector once started
        self._settles_heap = settle_heap
        self.gate = TradingGate()
        self.queue: asyncio.Queue[Announcement] = asyncio.Queue(MAX_QUEUED)  # full: dropped, logged
        self.strategies = strategies if strategies is not None else load_strategies(config)
        self.exchanges: dict[str, Exchange] = {}
        self.runners: list[StrategyRunner] = []
        self.journal: Journal | None = None
        self.router: OrderRouter | None = None
        self.control: ControlServer | None = None
        self.journal_watch: JournalWatch | None = None
        self.clock: ClockWatch | None = None
        self.exits: ExitManager | None = None
        self.dispatcher: Dispatcher | None = None
        self.system: TradingSystem | None = None
        self.supervisor: FeedLinks | None = None
        self.venues: VenueStarter | None = None
        self.ready = asyncio.Event()  # startup finished (not gated on the feed)
        self.started_at = time.monotonic()
        # Alerts and systemd run on the real clock whatever `sleep` tests inject for the feed.
        self.notifier = Notifier(config.alerts)
        self.notifier.attach(self.gate)
        self.pair = Pair.create(config, self.gate, self.notifier)  # ha: starts halted `ha_standby`
        self.systemd = SystemdNotifier.from_env()
        self.gate.subscribe(self._on_gate_change)
        self.mode: Mode = "normal"
        self._fatal: BridgeError | None = None  # found by a listener; main_loop raises it
        self.health: HealthServer | None = None
        self._stop = asyncio.Event()
        self._sleep = sleep
        self._tasks: list[asyncio.Task[None]] = []
        self._aux_stop = asyncio.Event()
        self._watchdog_stop = asyncio.Event()
        self._aux_tasks: list[asyncio.Task[None]] = []
        self._dispatch_mark: tuple[int, float] = (0, time.monotonic())
        self.loop_lag = LoopLagProbe()  # bridge_event_loop_lag_seconds; its worst in the status line
        self.reloader = Reloader(self, hook_timeout=STRATEGY_HOOK_TIMEOUT)

    async def reload(self) -> str:
        """Re-read the config file and apply what can change live (see bridge.daemon_reload); the
        answer's text: what changed, or why it was refused (the running config then stays)."""
        return (await self.reloader.reload())[1]

    def request_reload(self) -> None:
        """SIGHUP (`systemctl reload bridge`): reload in the background."""
        self.reloader.request()

    async def _control_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        ok, text = await self.reloader.reload()
        return {"ok": True, "message": text} if ok else {"ok": False, "error": text}

    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this): at once, exit 0, even in exits-only mode
        (open positions stay in the journal for the next run). Safe to call more than once."""
        self._stop.set()

    async def run(self) -> None:
        """Run until stopped. Raises BridgeError (with an exit code) on a fatal condition."""
        self._aux_tasks.append(asyncio.create_task(self.notifier.run(self._aux_stop), name="alerts"))
        fatal: BaseException | None = None
        try:
            if await self._start_unless_stopped():
                await self.main_loop()
        except BaseException as exc:
            fatal = exc
            raise
        finally:
            self.systemd.stopping()
            # A stopping daemon's tasks end on purpose: pings would be withheld with an error line.
            self._watchdog_stop.set()
            if fatal is not None and not isinstance(fatal, asyncio.CancelledError):
                error = str(fatal) if isinstance(fatal, BridgeError) else type(fatal).__name__
                self.notifier.stopping(error=error)
            else:
                self.notifier.stopping()
            try:
                await self.shutdown()
            finally:
                await self._stop_aux()
                self.systemd.notify(STATUS="")  # no stale "halted: ..." left in systemctl status

    async def _start_unless_stopped(self) -> bool:
        """Run startup(), unless a stop is requested first (SIGTERM while an exchange hangs at warm-up):
        then startup is cancelled and the daemon stops cleanly (exit 0), closing what it had opened.
        False when it stopped before it was up."""
        startup = asyncio.create_task(self.startup(), name="startup")
        stopping = asyncio.create_task(self._stop.wait(), name="stop-wait")
        try:
            await asyncio.wait({startup, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if startup.done():
            startup.result()  # a fatal start-up error raises here
            return True
        startup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await startup
        log.info("daemon.stopped_during_startup")
        return False

    def snapshot(self) -> dict[str, Any]:
        """The daemon's state for /health and the periodic `daemon.status` line."""
        return build_snapshot(
            gate=self.gate,
            supervisor=self.supervisor,
            runners=self.runners,
            started_at=self.started_at,
            mode=self.mode,
            loop_lag_max_s=self.loop_lag.worst_s(),
            ha=None if self.pair is None else self.pair.snapshot(),
        )

    async def startup(self) -> None:
        started = time.perf_counter()
        cfg = self.config
        if cfg.health.enabled:  # first, so /health answers 503 during a slow warm-up
            self.health = HealthServer(cfg.health, self.snapshot)
            await self.health.start()
        self._aux_tasks.append(
            asyncio.create_task(
                run_status_log(self.snapshot, cfg.health.status_interval, self._aux_stop), name="status-log"
            )
        )
        self._aux_tasks.append(asyncio.create_task(self.loop_lag.run(self._aux_stop), name="loop-lag"))
        log.info(
            "daemon.starting",
            dry_run=cfg.trading.dry_run,
            strategies=[s.name for s in self.strategies],
            exchanges=list(cfg.exchanges),
        )
        self.journal = Journal.open(cfg.state_dir, dry_run=cfg.trading.dry_run)
        if not self.journal.writable:
            self.journal.close()
            self.journal = None
            raise ConfigError(
                f"state_dir: {cfg.state_dir} is in use by another bridge process; two daemons must not "
                "share a state_dir (each would trade the same announcements)"
            )
        for ex_id, ex_cfg in cfg.exchanges.items():
            self.exchanges[ex_id] = Exchange(ex_id, ex_cfg, dry_run=cfg.trading.dry_run)
        # A venue down after the first attempts is halted and retried in the background (main_loop).
        self.venues = VenueStarter(
            self.exchanges, self.gate, check_keys=not cfg.trading.dry_run, sleep=self._sleep
        )
        await self.venues.start_all()
        self.system = await assemble(
            cfg,
            strategies=self.strategies,
            journal=self.journal,
            exchanges=self.exchanges,
            gate=self.gate,
            queue=self.queue,
            sleep=self._sleep,
            on_outcome=self._order_alert,
            hook_timeout=STRATEGY_HOOK_TIMEOUT,
            alerts=self.notifier,
        )
        self.router = self.system.router
        self.exits = self.system.exits
        if self.pair is not None:  # fencing, would-be orders, takeover; then it campaigns for the lease
            self.pair.attach(self.system)
        self.journal_watch = JournalWatch(self.journal, lambda _: self.gate.halt("journal_missing"))
        # The venues' clocks, measured as the exchanges started: checked now (an offset beyond
        # trading.max_clock_offset halts before the first announcement), then hourly.
        self.clock = ClockWatch(
            self.exchanges,
            self.gate,
            max_offset_s=cfg.trading.max_clock_offset,
            alert=functools.partial(self.notifier.notify, "clock_offset"),
        )
        self.clock.check()
        # `bridge close` / `bridge resume` reach the running daemon here (a ConfigError, exit 78, if
        # another daemon answers on it).
        self.operator = remote.operator(
            cfg, self.gate, self.system, self.journal, self.snapshot, reload=self.reload
        )
        self.operator.controls["reload"] = self._control_reload  # `bridge reload`
        self.control = ControlServer(
            socket_path(cfg.state_dir, dry_run=cfg.trading.dry_run), self.operator.controls
        )
        await self.control.start()
        self.runners = self.system.runners
        self.dispatcher = self.system.dispatcher
        recorder = self.recorder
        self.gate.configure_links([link.name for link in cfg.feed.links], cfg.feed.arm_when)
        self.supervisor = FeedLinks.build(
            cfg.feed,
            lambda link: LinkStatus(self.gate, link),
            self.queue,
            sleep=self._sleep,
            on_welcome=self.notifier.on_welcome,
            on_frame_for=None
            if recorder is None
            else lambda link: functools.partial(recorder.frame, link=link),
        )
        if self.recorder is not None:
            await self._record_markets(self.recorder)
            self._aux_tasks.append(asyncio.create_task(self.recorder.run(self._aux_stop), name="recorder"))
        if self._settles_heap:  # markets and strategies loaded: out of the collector's full passes
            settle_heap()
            hand_over_gil_quickly()
        self.gate.resume("starting")
        self.ready.set()
        # READY=1 once config, strategies, exchanges and markets are ready; not gated on the feed,
        # which may be down at boot (the gate, not systemd, keeps trading off until it is up).
        self.systemd.ready()
        self._aux_tasks.append(
            asyncio.create_task(
                run_watchdog(self.systemd, progress=self._making_progress, stop=self._watchdog_stop),
                name="watchdog",
            )
        )
        self._aux_tasks += self.operator.start(self._aux_stop)  # Telegram commands, if on
        self.notifier.started(
            dry_run=cfg.trading.dry_run,
            strategies=[r.name for r in self.runners],
            exchanges=list(self.exchanges),
        )
        log.info("daemon.ready", elapsed_ms=round((time.perf_counter() - started) * 1000, 1))

    async def main_loop(self) -> None:
        """Run until stopped, or until the feed fails for good. A dead feed key (CredentialsRejected)
        or a 401 (ConfigError) with positions open first runs exits-only mode until they are closed,
        then raises that same error (exit 77/78); a stop request returns (exit 0)."""
        assert self.supervisor is not None and self.dispatcher is not None
        stop = asyncio.Event()
        supervisor = asyncio.create_task(self.supervisor.run(), name="feed-supervisor")
        self._tasks = [
            supervisor,
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            *(asyncio.create_task(r.run(), name=f"strategy:{r.name}") for r in self.runners),
            *(
                asyncio.create_task(ex.run_market_refresh(stop), name=f"markets:{ex.id}")
                for ex in self.exchanges.values()
                if ex.started
            ),
        ]
        if self.venues is not None and self.venues.down:
            on_up = functools.partial(self._venue_up, stop)
            self._tasks.append(asyncio.create_task(self.venues.run(stop, on_up), name="venue-retry"))
        if not self.config.trading.dry_run:
            assert self.journal is not None and self.router is not None
            reconcile = reconcile_open_orders(self.journal, self.router, self.exchanges)
            self._tasks.append(asyncio.create_task(reconcile, name="reconcile"))
        if self.exits is not None:
            self._tasks.append(asyncio.create_task(self.exits.run(stop), name="exits"))
        if self.journal_watch is not None:
            self._tasks.append(asyncio.create_task(self.journal_watch.run(stop), name="journal-watch"))
        if self.clock is not None:
            self._tasks.append(asyncio.create_task(self.clock.run(stop, check_first=False), name="clock"))
        if self.system is not None:
            self._tasks.append(asyncio.create_task(self.system.prices.run(stop), name="prices"))
            self._tasks.append(asyncio.create_task(self.system.balances.run(stop), name="balances"))
            self._tasks.append(asyncio.create_task(self.system.retention.run(stop), name="retention"))
        stopper = asyncio.create_task(self._stop.wait(), name="stop-wait")
        try:
            await asyncio.wait({supervisor, stopper}, return_when=asyncio.FIRST_COMPLETED)
            feed_error = _feed_gone_for_good(supervisor)
            if feed_error is not None and not self._stop.is_set():
                await self._exits_only(feed_error)
        finally:
            stop.set()
            stopper.cancel()
            self.gate.halt("shutting_down")
            if not supervisor.done():
                self.supervisor.stop()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(supervisor), 2.0)
        if self._fatal is not None:
            raise self._fatal
        if self.mode == "exits_only" and self._stop.is_set():
            return  # stopped by request during exits-only mode: a clean stop, positions journaled
        if supervisor.done() and not supervisor.cancelled():
            supervisor.result()  # re-raise a fatal feed condition (key expired, 401, 403)
        elif not supervisor.done():
            supervisor.cancel()

    async def _exits_only(self, error: BridgeError) -> None:
        await run_exits_only(self, error)

    async def shutdown(self) -> None:
        log.info("daemon.stopping")
        if self.control is not None:
            await self.control.stop()
            self.control = None
        if self.router is not None:
            self.router.cancel_lookups()  # the next start looks those orders up again
        self.gate.halt("shutting_down")
        if self.supervisor is not None:
            self.supervisor.stop()
        # Let strategies finish what they are sending (bounded), then cancel everything left.
        await self._drain_runners()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pair is not None:  # nothing more is sent from here: hand the lease over at once
            await self.pair.close()
        if self.system is not None:
            await stop_strategies(self.system, within=STRATEGY_HOOK_TIMEOUT)
        await asyncio.gather(*(ex.close() for ex in self.exchanges.values()), return_exceptions=True)
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        log.info("daemon.stopped")

    async def _drain_runners(self) -> None:
        busy = [r.idle.wait() for r in self.runners if not r.idle.is_set()]
        if busy:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*busy), DRAIN_TIMEOUT)

    async def _stop_aux(self) -> None:
        self._aux_stop.set()
        self._watchdog_stop.set()
        await asyncio.gather(*self._aux_tasks, return_exceptions=True)
        if self.health is not None:
            await self.health.stop()
        await self.notifier.close()  # sends what is still queued (e.g. `stopping`), bounded

    async def _record_markets(self, recorder: Recorder) -> None:
        """Start a recording with what the exchanges list and their prices, so its replay knows them."""
        up = {ex.id: ex for ex in self.exchanges.values() if ex.started}
        prices = {ex.id: await ex.last_prices() for ex in up.values()}
        snapshot = market_snapshot(up, prices)
        recorder.note(time.time_ns(), {"markets": snapshot})

    async def _venue_up(self, stop: asyncio.Event, ex: Exchange) -> None:
        """A venue down at boot has started: look up the orders an earlier run left open there (before
        its halt lifts), then keep its markets fresh like the others'."""
        if not self.config.trading.dry_run and self.journal is not None and self.router is not None:
            await reconcile_open_orders(self.journal, self.router, self.exchanges, venue=ex.id)
        self._tasks.append(asyncio.create_task(ex.run_market_refresh(stop), name=f"markets:{ex.id}"))

    def _order_alert(self, outcome: OrderOutcome) -> None:
        if outcome.status != "skipped":
            self.notifier.on_order(
                outcome.status,
                exchange=outcome.exchange,
                symbol=outcome.symbol,
                side=outcome.side,
                client_order_id=outcome.client_order_id,
                reason=outcome.reason,
                dry_run=self.config.trading.dry_run,
            )

    def _on_gate_change(self, armed: bool, reasons: frozenset[str], key: str) -> None:
        self._report_status()
        if key in reasons and split_key(key)[0] == "credentials_rejected":
            self._check_every_venue_rejected()

    def _check_every_venue_rejected(self) -> None:
        """One venue's rejected key halts that venue only; once every configured venue's key has been
        rejected there is nothing left to trade or exit on, and a restart cannot help: stop, exit 77."""
        venues = sorted(self.config.exchanges)
        if not venues or self._fatal is not None:
            return
        if all(self.gate.halted_on("credentials_rejected", v) for v in venues):
            log.error("daemon.every_venue_rejected", venues=venues)
            self._fatal = CredentialsRejected(
                f"every venue's key was rejected ({', '.join(venues)}); new keys are needed"
            )
            self._stop.set()

    def _report_status(self) -> None:
        """The systemd status line: the mode, every halt reason (scoped ones with their venue), the feed."""
        state = self.supervisor.state if self.supervisor is not None else "starting"
        if self.gate.armed:
            text = f"trading armed; feed {state}"
        else:
            text = f"trading halted ({', '.join(sorted(self.gate.reasons))}); feed {state}"
        if self.mode == "exits_only":
            text = f"exits only: closing open positions, no new entries; {text}"
        if self.pair is not None:
            text = f"{self.pair.status_text()}; {text}"
        self.systemd.status(text)

    def _making_progress(self) -> bool:
        """For the systemd watchdog: the feed supervisor and the dispatcher are alive and the
        dispatcher is not stuck behind a full queue. A feed outage is progress (the supervisor is
        backing off as it should); a wedged loop never gets here at all."""
        by_name = {t.get_name(): t for t in self._tasks}
        # In exits-only mode the feed has ended on purpose; the exit manager is what must stay alive.
        needed = ("exits", "dispatcher") if self.mode == "exits_only" else ("feed-supervisor", "dispatcher")
        if any(by_name[name].done() for name in needed if name in by_name):
            return False
        if self.dispatcher is None:
            return True
        handled = self.dispatcher.seen + self.dispatcher.duplicates
        count, since = self._dispatch_mark
        now = time.monotonic()
        if handled != count or self.queue.empty():
            self._dispatch_mark = (handled, now)
            return True
        return now - since < 60.0  # queued announcements untouched for a minute: wedged


def _feed_gone_for_good(supervisor: asyncio.Task[None]) -> BridgeError | None:
    """The supervisor's error when it ended because the feed cannot come back without a human (a dead
    key: 403 or a key_expired/revoked/invalidated close; a 401); None otherwise."""
    if not supervisor.done() or supervisor.cancelled():
        return None
    exc = supervisor.exception()
    return exc if isinstance(exc, CredentialsRejected | ConfigError) else None
