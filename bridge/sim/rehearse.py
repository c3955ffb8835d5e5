"""`bridge rehearse`: the user's own config, live (`dry_run: false`, the real order path) against a local
feed emulator and a local fake of each exchange account, with the feed's and every account's URLs and keys
swapped in memory and a temporary state_dir. Announcements come from a prompt or a stream file; the
orders show as they happen (bridge.ops.console's order table).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import structlog

from bridge.errors import ConfigError, ExitCode
from bridge.feed.client import MAX_QUEUED
from bridge.feed.codec import Announcement
from bridge.sim.verbs import _port

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.daemon import Daemon
    from bridge.feed.stream_format import StreamLine
    from bridge.ops.console import Output
    from bridge.sim.emulator import FeedEmulator
    from bridge.sim.fake_venue import FakeVenue

log = structlog.get_logger(__name__)

Command = Callable[[asyncio.Event], Coroutine[Any, Any, int]]
BANNER = "REHEARSAL: real order path, local fake exchanges, nothing leaves this machine"
VENUES = ("binance", "bybit", "okx", "gate")  # the venues with a local fake (bridge/sim/fake_*.py)
# Listed on every fake besides its defaults (BTC/USDT, ETH/USDT, ...), so `ABC upbit` has a market to buy.
MARKETS = (("ABC", "USDT", 1.25), ("DEF", "USDT", 0.042), ("GHI", "USDT", 17.5))
# ccxt settings that are credentials: dropped, the fake's keys go in the account's own fields.
_CCXT_CREDENTIALS = frozenset(
    {"apiKey", "secret", "password", "uid", "login", "privateKey", "token", "twofa"}
)
_SETTLE_S = 30.0  # the longest an announcement may take to go through the daemon before the prompt returns
HELP = (
    "Type an announcement: TICKERS PUBLISHER [LISTING_TYPE], e.g. `ABC upbit` or "
    "`ABC,DEF binance spot_listing`;\n`market XYZ/USDT 0.5` lists a market on every fake; "
    "`quit` or Ctrl-D ends."
)


def register(sub: Any, guarded: Callable[[Command], int], default_config: str) -> None:
    """Add `rehearse` to the CLI's subparsers; `guarded` runs it until SIGTERM/SIGINT."""
    from bridge.ops.console import VERBOSE_HELP

    reh = sub.add_parser(
        "rehearse",
        help="run your config for real against a local feed and local fake exchanges; type announcements",
    )
    reh.add_argument("-c", "--config", default=default_config, help="config file (default: %(default)s)")
    reh.add_argument(
        "--script", type=Path, help="announce this stream file (JSONL, see Stream files), then exit"
    )
    reh.add_argument(
        "--port", type=_port, default=0, help="the feed emulator's port (default: 0, any free one)"
    )
    reh.add_argument(
        "--control-port",
        type=_port,
        default=0,
        help="the emulator's control port, for `bridge emulator-send` (default: 0, any free one)",
    )
    reh.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)

    def command(args: argparse.Namespace) -> int:
        from bridge import config as config_mod
        from bridge.ops import console

        config = config_mod.load(args.config, offline=True)  # the real secrets are not needed
        out = console.setup(verbose=args.verbose)
        return guarded(lambda stop: rehearse(config, stop, out=out, args=args))

    command.__name__ = "_cmd_rehearse"
    reh.set_defaults(func=command)


def venue_of(name: str, venue: str | None) -> str:
    """The venue a config account trades on: its `venue:`, else its name."""
    return (venue or name).lower()


def make_fake(name: str, venue: str, market_types: tuple[str, ...]) -> FakeVenue:
    """A fake for one account; a ConfigError naming the account when no fake exists for its venue."""
    from bridge.sim.fake_binance import FakeBinance
    from bridge.sim.fake_binance_futures import FakeBinanceFutures
    from bridge.sim.fake_bybit import FakeBybit
    from bridge.sim.fake_gate import FakeGate
    from bridge.sim.fake_okx import FakeOkx

    fake: FakeVenue
    if venue == "binance":
        fake = FakeBinanceFutures() if "swap" in market_types else FakeBinance()
    elif venue == "bybit":
        fake = FakeBybit()
    elif venue == "okx":
        fake = FakeOkx()
    elif venue == "gate":
        fake = FakeGate()
    else:
        raise ConfigError(
            f"exchanges.{name}: no local fake of {venue} to rehearse against "
            f"(there are fakes of {', '.join(VENUES)})"
        )
    for base, quote, price in MARKETS:
        fake.add_market(base, quote, price=price)
    return fake


def swapped_config(
    config: Config, *, feed_url: str, feed_key: str, fakes: Mapping[str, FakeVenue], state_dir: Path
) -> Config:
    """The config as rehearsed, in memory: the feed on the emulator (one link), every account on its
    fake with the fake's keys, `dry_run: false`, a temporary state_dir; alerts, /health and the HA
    lease off (nothing may reach the user's phone, port or lock). Strategies, limits, risk: as given."""
    from bridge.config import AlertsConfig
    from bridge.secrets import Secret

    exchanges = {}
    for name, account in config.exchanges.items():
        fake = fakes[name]
        ccxt = {k: v for k, v in account.ccxt.items() if k not in _CCXT_CREDENTIALS and k != "hostname"}
        ccxt.update(fake.ccxt_config())  # every URL, the test and demo ones too
        passphrase = getattr(fake, "passphrase", None)
        exchanges[name] = dataclasses.replace(
            account,
            api_key=Secret(fake.api_key),
            secret=Secret(fake.secret),
            password=None if passphrase is None else Secret(passphrase),
            ccxt=ccxt,
        )
    feed = dataclasses.replace(config.feed, url=feed_url, api_key=Secret(feed_key), links=())
    rehearsed = dataclasses.replace(
        config,
        feed=feed,
        exchanges=exchanges,
        trading=dataclasses.replace(config.trading, dry_run=False),
        state_dir=state_dir,
        alerts=AlertsConfig(),
        health=dataclasses.replace(config.health, enabled=False),
        ha=None,
    )
    object.__setattr__(rehearsed, "source", config.source)  # errors still name the user's file
    return rehearsed


async def rehearse(config: Config, stop: asyncio.Event, *, out: Output, args: argparse.Namespace) -> int:
    """Start the fakes and the emulator, the daemon on the swapped config; then announce what the
    person types (or the script holds) until quit, Ctrl-D, the end of the script or a signal."""
    from bridge.sim.demo import DEMO_API_KEY
    from bridge.sim.emulator import FeedEmulator
    from bridge.sim.emulator_control import EmulatorControl
    from bridge.sim.verbs import _listen as listen

    script = _read_script(args.script) if args.script is not None else None
    fakes = {
        name: make_fake(name, venue_of(name, account.venue), account.market_types)
        for name, account in config.exchanges.items()
    }
    emulator = FeedEmulator(api_keys={DEMO_API_KEY}, port=args.port, heartbeat_interval=5.0)
    control = EmulatorControl(emulator, port=args.control_port)
    started: list[Any] = []
    try:
        for fake in fakes.values():
            await fake.start()
            started.append(fake)
        await listen(emulator.start(), "--port", "127.0.0.1", args.port)
        started.append(emulator)
        await listen(control.start(), "--control-port", "127.0.0.1", args.control_port)
        started.append(control)
        with tempfile.TemporaryDirectory(prefix="bridge-rehearse-") as state_dir:
            cfg = swapped_config(
                config, feed_url=emulator.url, feed_key=DEMO_API_KEY, fakes=fakes, state_dir=Path(state_dir)
            )
            session = Session(cfg, config, emulator, fakes, out)
            _say(out.human, session.banner(control.port))
            return await session.run(stop, script)
    finally:
        for server in reversed(started):
            await server.stop()


class Session:
    """One rehearsal: the daemon on the swapped config, and what is announced to it."""

    def __init__(
        self,
        config: Config,
        original: Config,
        emulator: FeedEmulator,
        fakes: Mapping[str, FakeVenue],
        out: Output,
    ) -> None:
        from bridge.daemon import Daemon

        self.config = config
        self.original = original
        self.emulator = emulator
        self.fakes = fakes
        self.out = out
        self.daemon: Daemon = Daemon(config)
        self.queue = DispatchQueue()
        self.daemon.queue = self.queue  # before run(): the feed links and the dispatcher share it
        self.announced = 0
        self.sent = 0  # announcements (not test ones) that reached the daemon

    def banner(self, control_port: int) -> str:
        lines = [
            BANNER,
            f"  config    {self.original.source} (read, never written; state in a temporary directory, "
            f"not {self.original.state_dir})",
            f"  feed      {self.original.feed.url} -> {self.emulator.url} (local emulator, key swapped)",
        ]
        for name, fake in self.fakes.items():
            lines.append(f"  {name:<9} -> {fake.url} ({type(fake).__name__}, keys swapped)")
        was = "true" if self.original.trading.dry_run else "false"
        lines.append(f"  trading   dry_run: false against the fakes (your config: dry_run: {was})")
        lines.append("  off       alerts, /health, ha")
        lines.append(
            f"  markets   {', '.join(f'{b}/{q} {p:g}' for b, q, p in MARKETS)}, BTC/USDT, ETH/USDT ..."
        )
        lines.append(f"  control   bridge emulator-send --port {control_port} announce ABC upbit")
        return "\n".join(lines)

    async def run(self, stop: asyncio.Event, script: list[StreamLine] | None) -> int:
        daemon = self.daemon
        task = asyncio.create_task(daemon.run(), name="daemon")
        try:
            if not await self._armed(task, stop):
                return int(ExitCode.OK)
            _say(self.out.human, "ready: trading is armed" + ("" if script is not None else "\n" + HELP))
            if script is not None:
                await self._play(script, stop)
            else:
                await self._prompt(stop, task)
        finally:
            daemon.request_stop()
            await task  # a fatal error in the daemon surfaces here, with its exit code
        _say(
            self.out.human,
            f"rehearsal ended: {_count(self.announced, 'announcement')}, "
            f"{_count(self._rows(), 'line')} in the order table",
        )
        return int(ExitCode.OK)

    async def _armed(self, task: asyncio.Task[None], stop: asyncio.Event) -> bool:
        """Wait until the daemon is connected and armed; False if stopped first."""
        armed = asyncio.Event()
        gate = self.daemon.gate
        gate.subscribe(lambda on, *_: armed.set() if on else None)
        if gate.armed:
            armed.set()
        waits = {asyncio.ensure_future(armed.wait()), asyncio.ensure_future(stop.wait()), task}
        try:
            await asyncio.wait(waits, timeout=60.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits - {task}:
                waiter.cancel()
        if task.done():
            task.result()  # a fatal start-up error (a refused key, a strategy) raises here
            return False
        if not armed.is_set() and not stop.is_set():
            raise ConfigError(f"{self.config.source}: the daemon did not arm within 60 s against the fakes")
        return armed.is_set()

    async def _prompt(self, stop: asyncio.Event, daemon: asyncio.Task[None]) -> None:
        """Read and carry out lines until quit, the end of input, a signal, or the daemon's end (a
        fatal error: it surfaces when the caller awaits the daemon)."""
        lines = StdinLines(prompt="rehearse> " if sys.stdin.isatty() and self.out.terminal else None)
        while True:
            getter = asyncio.ensure_future(lines.next())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper, daemon}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                return
            line = getter.result()
            if line is None or line.strip().lower() in ("quit", "exit", "q"):
                return
            await self.command(line)

    async def command(self, line: str) -> None:
        """Carry out one typed line; a mistake is one line saying what was expected, never an exit."""
        from bridge.sim.emulator_control import ControlError, parse_announcement

        words = line.split()
        if not words:
            return
        if words[0].lower() in ("help", "?"):
            _say(self.out.human, HELP)
            return
        try:
            if words[0].lower() == "market":
                self._list_market(words[1:])
                return
            fields = parse_announcement(words)
        except ControlError as exc:
            _say(self.out.human, f"not understood: {exc}")
            log.info("rehearse.not_understood", line=line[:200], error=str(exc))
            return
        await self.announce(fields)

    async def announce(self, fields: Mapping[str, Any], *, test: bool = False) -> None:
        """Send one announcement and wait until every strategy is done with it (its orders shown)."""
        rows = self._rows()
        if test:
            reached = await self.emulator.send_test_announcement(**fields)
        else:
            reached = await self.emulator.announce(**fields)
        what = f"{fields.get('ticker')} ({fields.get('publisher')} {fields.get('listingType')})"
        if reached == 0:
            cex = self.config.feed.cex
            subscribed = "all" if cex is None else ", ".join(cex)
            _say(
                self.out.human,
                f"{what}: not sent, the daemon does not subscribe to it (feed.cex: {subscribed})",
            )
            return
        self.announced += 1
        log.info("rehearse.announced", **{k: v for k, v in fields.items() if k != "title"})
        if test:
            return
        self.sent += 1  # the feed reader enqueues it, the dispatcher hands it on (or drops a copy)
        await asyncio.wait_for(self.queue.wait_done(self.sent), _SETTLE_S)
        for runner in self.daemon.runners:
            await asyncio.wait_for(runner.queue.join(), _SETTLE_S)
        if self.daemon.router is not None:
            await asyncio.wait_for(self.daemon.router.settled(), _SETTLE_S)
        if self._rows() == rows:
            _say(self.out.human, f"{what}: no order (no strategy acted on it)")

    async def _play(self, script: list[StreamLine], stop: asyncio.Event) -> None:
        """Play a stream file: markets and prices onto the fakes, announcements to the daemon, each one
        through before the next. Recorded timestamps move to now, ages kept (old news stays old)."""
        from bridge.feed import stream_format

        skipped = 0
        for line in script:
            if stop.is_set():
                return
            if line.delay:
                await asyncio.sleep(line.delay)  # the script's own pacing
            if line.markets is not None:
                for account, symbols in line.markets.items():
                    for symbol, price in symbols.items():
                        self._put_market(account, symbol, price)
                continue
            if line.price is not None:
                account, symbol, price = line.price
                self._put_market(account, symbol, price)
                continue
            message = line.message if line.message is not None else _decoded(line.frame)
            kind = None if message is None else message.get("type")
            if message is None or kind not in ("announcement", "test_announcement"):
                skipped += 1  # welcome, heartbeats: the emulator sends its own
                continue
            now = time.time_ns()
            if line.t_ns is not None:
                shift_us = (now - line.t_ns) // 1000
                message = {
                    k: v + shift_us if k.endswith("TimestampUs") and isinstance(v, int) else v
                    for k, v in message.items()
                }
            fields = {k: v for k, v in stream_format.fill_timestamps(message, now).items() if k != "type"}
            await self.announce(fields, test=kind == "test_announcement")
        if skipped:
            log.info("rehearse.script_lines_skipped", lines=skipped, why="not announcements")

    def _list_market(self, words: list[str]) -> None:
        if len(words) != 2 or "/" not in words[0]:
            _say(
                self.out.human,
                "not understood: expected `market BASE/QUOTE PRICE`, e.g. `market XYZ/USDT 0.5`",
            )
            return
        try:
            price = float(words[1])
        except ValueError:
            price = 0.0
        if not 0 < price < float("inf"):
            _say(self.out.human, f"not understood: the price must be a positive number, got {words[1]!r}")
            return
        for account in self.fakes:
            self._put_market(account, words[0], price)
        _say(self.out.human, f"listed {words[0].upper()} at {price:g} on {', '.join(self.fakes)}")

    def _put_market(self, account: str, symbol: str, price: float | None) -> None:
        fake = self.fakes.get(account)
        if fake is None or price is None or "/" not in symbol:
            return
        base, quote = symbol.upper().split(":")[0].split("/", 1)
        fake.add_market(base, quote, price=price)

    def _rows(self) -> int:
        return 0 if self.out.table is None else self.out.table.rows


class DispatchQueue(asyncio.Queue[Announcement]):
    """The daemon's feed queue, counting the announcements the dispatcher is done with (handed to the
    strategies, dropped as a copy, or refused), so a rehearsal waits for each without polling."""

    def __init__(self) -> None:
        super().__init__(MAX_QUEUED)
        self.done = 0
        self._changed = asyncio.Event()

    def task_done(self) -> None:
        super().task_done()
        self.done += 1
        self._changed.set()

    async def wait_done(self, count: int) -> None:
        while self.done < count:
            self._changed.clear()
            await self._changed.wait()


def _decoded(frame: bytes | None) -> dict[str, Any] | None:
    try:
        message = orjson.loads(frame or b"")
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def _read_script(path: Path) -> list[StreamLine]:
    from bridge.feed import stream_format

    return stream_format.read(path).lines  # a ConfigError naming the file and line, before anything starts


class StdinLines:
    """Lines from stdin, read by a daemon thread (a blocked read never holds the process up at exit),
    one at a time when asked: the prompt is shown only after the last line's orders are."""

    def __init__(self, prompt: str | None) -> None:
        self._prompt = prompt
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._wanted = threading.Semaphore(0)
        threading.Thread(target=self._read, name="rehearse-stdin", daemon=True).start()

    async def next(self) -> str | None:
        """The next line; None at the end of input."""
        self._wanted.release()
        return await self._lines.get()

    def _read(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                line = input(self._prompt) if self._prompt is not None else sys.stdin.readline() or None
            except (EOFError, OSError, ValueError):
                line = None
            self._loop.call_soon_threadsafe(self._lines.put_nowait, line)
            if line is None:
                return


def _say(stream: TextIO, text: str) -> None:
    """A line for the person, on the table's stream (the table is written at once: no reordering)."""
    stream.write(text + "\n")
    stream.flush()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
