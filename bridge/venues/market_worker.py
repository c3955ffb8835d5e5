"""The full market refresh off the event loop: one child process per daemon (bridge.venues.market_loader)
fetches and parses every market; the loop unpickles its small frames one at a time, yielding between
them, into new maps that `MarketMaps.apply` swaps into the ccxt instance in one step.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import pickle
import sys
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bridge.config import ExchangeConfig
from bridge.errors import ExchangeUnavailable
from bridge.venues.ccxt_client import ccxt_config
from bridge.venues.market_loader import (
    CURRENCY_MAPS,
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    LoadRequest,
    encode,
)

log = structlog.get_logger("bridge.venues.exchange")

# Bound on one full refresh, the worker's start included (a cold interpreter importing ccxt takes
# about a second): past it the worker is presumed hung, killed, and the refresh fails.
WORKER_TIMEOUT_S = 60.0
CLOSE_GRACE_S = 2.0  # a worker told to stop gets this long before it is killed
# The variables the worker inherits: enough to run Python and reach the exchange (locale, TLS,
# proxies), nothing else, so the daemon's secrets (BINANCE_SECRET=...) never reach it.
_ENV_KEPT = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HOME",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def load_request(exchange_id: str, cfg: ExchangeConfig) -> LoadRequest:
    """What the worker gets to load this exchange's markets: the constructor config the daemon's
    instance was built from, with every credential removed (markets are public)."""
    return LoadRequest(
        exchange_id=exchange_id,
        market_types=tuple(cfg.market_types),
        sandbox=cfg.sandbox,
        ccxt=ccxt_config(cfg, dry_run=True),  # dry_run: without apiKey, secret, password, ...
    )


@dataclass
class MarketMaps:
    """ccxt's market maps, built from the worker's frames, ready to be swapped in. The markets are the
    ones ccxt prepared in the worker (defaults and fees applied); markets_by_id lists those same
    objects in ccxt's order (spot first).

    An entry equal to the one in `reuse` (the maps in use) keeps the object in use and drops the new
    copy at once: the swap then frees almost nothing, and a refresh leaves the garbage collector only
    the few markets that changed to track, instead of some 50,000 new long-lived objects that would
    bring on a full collection of the whole heap (~200 ms with 3,000 markets, measured)."""

    reuse: dict[str, dict[str, Any]] = field(default_factory=dict)
    markets: dict[str, Any] = field(default_factory=dict)
    markets_by_id: dict[str, list[Any]] = field(default_factory=dict)
    currency_maps: dict[str, dict[str, Any]] = field(default_factory=lambda: {n: {} for n in CURRENCY_MAPS})
    options: dict[str, Any] = field(default_factory=dict)
    changed: int = 0  # markets new or different from the ones in use
    cost: float = 0.0  # the requests' cost in ccxt units, for the daemon's request budget
    worker_ms: float = 0.0  # the load as timed by the worker
    swap_ms: float = 0.0  # the swap into the ccxt instance, as timed by MarketBook.reload

    symbols: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    currencies_by_id: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def reusing(cls, ex: Any) -> MarketMaps:
        """Empty maps that will reuse the equal entries of the ccxt instance's current maps."""
        names = ("markets", "markets_by_id", *CURRENCY_MAPS)
        return cls(reuse={name: getattr(ex, name, None) or {} for name in names})

    def add_markets(self, chunk: list[dict[str, Any]]) -> None:
        in_use = self.reuse.get("markets") or {}
        for market in chunk:
            symbol = market["symbol"]
            old = in_use.get(symbol)
            if old is not None and old == market:
                market = old
            else:
                self.changed += 1
            self.markets[symbol] = market
            self.markets_by_id.setdefault(market["id"], []).append(market)

    def add_currencies(self, name: str, items: list[tuple[str, Any]]) -> None:
        in_use = self.reuse.get(name) or {}
        target = self.currency_maps[name]
        for code, currency in items:
            old = in_use.get(code)
            target[code] = old if old is not None and old == currency else currency

    async def finish(self) -> None:
        """Build what ccxt derives from the maps (sorted lists, indexes), a step at a time with the loop
        running in between, so `apply` only assigns. An id whose markets are the very objects in use
        keeps its list in use."""
        in_use = self.reuse.get("markets_by_id") or {}
        for market_id, listed in self.markets_by_id.items():
            old = in_use.get(market_id)
            if old is not None and old == listed:  # compares by identity first: the reused markets
                self.markets_by_id[market_id] = old
        await asyncio.sleep(0)
        self.symbols = sorted(self.markets)
        await asyncio.sleep(0)
        self.ids = sorted(self.markets_by_id)
        await asyncio.sleep(0)
        currencies = self.currency_maps["currencies"]
        self.codes = sorted(currencies)
        self.currencies_by_id = {c["id"]: c for c in currencies.values() if c.get("id") is not None}
        self.reuse = {}

    def apply(self, ex: Any) -> None:
        """Swap the finished maps into the ccxt instance: assignments only, and no await, so nobody sees
        a half-swapped instance."""
        ex.markets = self.markets
        ex.markets_by_id = self.markets_by_id
        ex.symbols = self.symbols
        ex.ids = self.ids
        ex.currencies = self.currency_maps["currencies"]
        ex.currencies_by_id = self.currencies_by_id
        ex.baseCurrencies = self.currency_maps["baseCurrencies"]
        ex.quoteCurrencies = self.currency_maps["quoteCurrencies"]
        ex.codes = self.codes
        ex.options.update(self.options)


def index_by_id(ex: Any) -> None:
    """Point ccxt's markets_by_id at the prepared market objects, as MarketMaps.apply does (ccxt's own
    set_markets lists separate, unprepared copies): a later full refresh then finds every market it
    can reuse and frees no copies at its swap."""
    by_id: dict[str, list[Any]] = {}
    for market in (ex.markets or {}).values():
        by_id.setdefault(market["id"], []).append(market)
    ex.markets_by_id = by_id


class MarketWorkerFailed(ExchangeUnavailable):
    """The worker died, hung or answered nonsense: this refresh failed (old markets kept); the next one
    starts a new worker."""


class MarketWorker:
    """One child process that loads markets for every exchange of the daemon, one load at a time.
    Started on the first `load`, restarted after a failure, stopped by `close`."""

    def __init__(self, *, timeout_s: float = WORKER_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.users = 0  # sessions holding it (see acquire/release)
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=5)
        self._stderr_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id while one is running."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def load(self, request: LoadRequest, maps: MarketMaps) -> MarketMaps:
        """Every market of `request.exchange_id`, fetched and parsed in the worker, into `maps`. Raises
        MarketWorkerFailed if the worker dies or takes longer than `timeout_s`, ExchangeUnavailable
        if the exchange did not answer."""
        async with self._lock:
            if self._closed:  # a load that began as the exchange closed must not start a new worker
                raise MarketWorkerFailed("market worker: closed", exchange=request.exchange_id)
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await self._load(request, maps)
            except ExchangeUnavailable:  # the exchange's answer, relayed: the worker is fine
                raise
            except TimeoutError:
                await self._discard()
                reason = f"no answer within {self.timeout_s:g} s (killed)"
            except asyncio.IncompleteReadError as exc:  # its output ended: it is exiting, or dead
                reason = self._failure(exc, await self._discard(grace_s=CLOSE_GRACE_S))
            except (OSError, _BadFrame) as exc:
                reason = self._failure(exc, await self._discard())
            except BaseException:  # cancelled mid-answer: the stream is out of step, start afresh
                await self._discard()
                raise
        raise MarketWorkerFailed(f"market worker: {reason}", exchange=request.exchange_id)

    async def close(self) -> None:
        """Stop the worker (SIGTERM, then SIGKILL if it is still there after CLOSE_GRACE_S). Safe to
        call twice. A closed worker starts no new process."""
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            # It holds nothing worth a clean exit (no keys, no orders): SIGTERM ends it at once.
            proc.terminate()
        await self._reap(proc, grace_s=CLOSE_GRACE_S)

    async def _load(self, request: LoadRequest, maps: MarketMaps) -> MarketMaps:
        proc = await self._started()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(encode(request))
        await proc.stdin.drain()
        while True:
            frame = await self._read(proc.stdout)
            with _no_collection():
                done = _take(frame, maps, request.exchange_id)
            if done:
                await maps.finish()
                return maps
            # Frames already buffered would be read without the loop running in between.
            await asyncio.sleep(0)

    @staticmethod
    async def _read(stream: asyncio.StreamReader) -> bytes:
        (size,) = FRAME_HEADER.unpack(await stream.readexactly(FRAME_HEADER.size))
        if size > MAX_FRAME_BYTES:
            raise _BadFrame(f"frame of {size} bytes")
        return await stream.readexactly(size)

    async def _started(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        if self._proc is not None:
            await self._discard()
        began = time.perf_counter()
        # exec of a fresh interpreter (like multiprocessing's spawn): nothing of this process's
        # threads, loop or memory is copied into the child
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.venues.market_loader",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_child_env(),
        )
        self._stderr.clear()
        assert proc.stderr is not None
        self._stderr_task = asyncio.create_task(self._keep_stderr(proc.stderr), name="market-worker-stderr")
        log.info(
            "exchange.market_worker_started",
            pid=proc.pid,
            elapsed_ms=round((time.perf_counter() - began) * 1000, 1),
        )
        return proc

    async def _keep_stderr(self, stream: asyncio.StreamReader) -> None:
        """Drain the worker's stderr (a full pipe would block it), keeping the last lines for the log."""
        while chunk := await stream.read(4096):
            for line in chunk.decode(errors="replace").splitlines():
                if line.strip():
                    self._stderr.append(line.strip()[:300])

    def _failure(self, exc: BaseException, proc: asyncio.subprocess.Process | None) -> str:
        """What went wrong, for the log line: the worker's exit and its last stderr line if it died."""
        if proc is not None and proc.returncode is not None and proc.returncode >= 0:
            last = f": {self._stderr[-1]}" if self._stderr else ""
            return f"exited with code {proc.returncode}{last}"
        if proc is not None and proc.returncode is not None:
            return f"killed by signal {-proc.returncode}"
        if isinstance(exc, asyncio.IncompleteReadError):
            return "closed its output mid-answer"
        return f"{type(exc).__name__}: {exc}"

    async def _discard(self, *, grace_s: float = 0.0) -> asyncio.subprocess.Process | None:
        """Kill the current worker (its state is unknown) unless it exits within `grace_s`; the next
        load starts a new one."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await self._reap(proc, grace_s=grace_s)
        return proc

    async def _reap(self, proc: asyncio.subprocess.Process, *, grace_s: float = 0.0) -> None:
        if proc.returncode is None and grace_s > 0:
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                pass
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        task, self._stderr_task = self._stderr_task, None
        if task is not None:
            await task  # ends at EOF, which the exit brought
        log.info("exchange.market_worker_stopped", pid=proc.pid, returncode=proc.returncode)


def _take(frame: bytes, maps: MarketMaps, exchange_id: str) -> bool:
    """Unpickle one frame into `maps`; True once the load is complete."""
    try:
        # the worker this process started is the only writer of the pipe
        message = pickle.loads(frame)  # noqa: S301
        kind = message[0] if isinstance(message, tuple) and message else None
        if kind == "error":
            failure = f"{message[1]}: {message[2]}"
        elif kind == "markets":
            maps.add_markets(message[1])
            return False
        elif kind == "currencies" and message[1] in maps.currency_maps:
            maps.add_currencies(message[1], message[2])
            return False
        elif kind == "done":
            maps.options, maps.cost = dict(message[1]["options"]), float(message[1]["cost"])
            maps.worker_ms = float(message[1]["elapsed_ms"])
            return True
        else:
            raise _BadFrame(f"unexpected frame {kind!r}")
    except (
        pickle.UnpicklingError,
        EOFError,
        ImportError,
        LookupError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise _BadFrame(f"malformed frame ({type(exc).__name__})") from None
    raise ExchangeUnavailable(failure, exchange=exchange_id)  # the exchange's answer, relayed


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No garbage collection while a frame is unpickled and merged (about a millisecond, no await).
    The copies that equal the maps in use are freed by reference counting before it ends, so the
    collector never sees them: left to it, the ~300,000 short-lived objects of a refresh would be
    promoted mid-frame and bring on a full collection of the heap (~200 ms with 3,000 markets)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _BadFrame(Exception):
    """A frame that is not part of the protocol."""


def _child_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in _ENV_KEPT if name in os.environ}
    # The worker imports bridge from where this process did, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


# ----- one worker per daemon (per event loop), shared by its exchanges -----

_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MarketWorker] = weakref.WeakKeyDictionary()


def shared_worker() -> MarketWorker:
    """The running loop's market worker (created without a process if there is none yet)."""
    loop = asyncio.get_running_loop()
    worker = _shared.get(loop)
    if worker is None:
        worker = _shared[loop] = MarketWorker()
    return worker


def acquire() -> MarketWorker:
    """The shared worker, counted as used until `release`."""
    worker = shared_worker()
    worker.users += 1
    return worker


async def release(worker: MarketWorker) -> None:
    """One user fewer; the last one out stops the worker."""
    worker.users -= 1
    if worker.users > 0:
        return
    loop = asyncio.get_running_loop()
    if _shared.get(loop) is worker:
        del _shared[loop]
    await worker.close()
