"""Several feed endpoints sharing one announcement source, as the real service runs wss://cryptolisting.ws
and wss://kr.cryptolisting.ws (Upbit only): the test double for redundant feed links.

Each endpoint is its own FeedEmulator (own port and url, keys, cooldown, clients and faults: drop_all,
close_all, pause_heartbeats, reject_next ... through `feed.endpoints[name]`). `SharedFeed.announce`
builds one announcement (same fields, same timestamps) and sends it to every endpoint that carries its
publisher, each after its own delay:

    specs = {"main": EndpointSpec(), "kr": EndpointSpec(delay_s=0.005, publishers={"upbit"})}
    async with SharedFeed(specs, api_keys=[KEY]) as feed:
        stamps = await feed.announce(publisher="upbit", ticker="ABC", delays={"kr": 0.0, "main": 0.01})

Sending is real asyncio scheduling, from one sender task, in a fixed order: by due time (the moment of
`announce` plus the endpoint's delay), ties in the order announced and then in the order the endpoints
were given. On one endpoint announcements always go out in the order announced, as on one connection
(a later one with a shorter delay waits for the earlier one). `hold(name)` parks an endpoint's
announcements until `release(name)`, so a test can make one endpoint arrive first, look at the result,
then let the other one follow, without sleeping: `schedule()` returns a `Delivery` whose `sent(name)`
and `wait()` are awaitables.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from bridge.sim.emulator import FeedEmulator, KeyGrant
from bridge.sim.feed_messages import announcement

Keys = Mapping[str, KeyGrant] | Iterable[str]
# How each endpoint stamps `dispatchTimestampUs`: None keeps the one shared value; "at_send" stamps the
# time of the endpoint's own write, as the real service does; a mapping sets it for the endpoints named.
DispatchStamps = Literal["at_send"] | Mapping[str, int] | None


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint. `delay_s`: how long after `announce` its copy goes out. `publishers`: the exchanges
    it carries (None: all); an announcement from another publisher is never sent there, and its welcomes'
    allowedCex are cut to them. `api_keys` / `cooldown` None: the SharedFeed's. `port` 0: any free one."""

    delay_s: float = 0.0
    publishers: Collection[str] | None = None  # kept as a frozenset of lowercase names
    api_keys: Keys | None = None
    cooldown: float | None = None
    port: int = 0

    def __post_init__(self) -> None:
        if self.publishers is not None:
            object.__setattr__(self, "publishers", frozenset(p.strip().lower() for p in self.publishers))

    def carries(self, publisher: str) -> bool:
        return self.publishers is None or publisher.strip().lower() in self.publishers


@dataclass(eq=False)
class Delivery:
    """One announcement on its way to the endpoints. `message`: the announcement as built (the shared
    fields and timestamps); `messages[name]`: what that endpoint sent (its own dispatch stamp set at its
    write when stamped "at_send"); `skipped`: endpoints that do not carry the publisher."""

    message: dict[str, Any]
    skipped: frozenset[str]
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    _sent: dict[str, asyncio.Future[list[int]]] = field(default_factory=dict, repr=False)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints it goes to, in the order they were given."""
        return tuple(self._sent)

    async def sent(self, name: str) -> list[int]:
        """Once endpoint `name` has written it: the time.time_ns() stamps of its writes, one per client
        reached ([] for a skipped endpoint or one without subscribed clients)."""
        if name in self.skipped:
            return []
        return await asyncio.shield(self._sent[name])

    async def wait(self) -> dict[str, list[int]]:
        """Once every endpoint has written it: the stamps per endpoint, skipped ones with []."""
        stamps = {name: await self.sent(name) for name in self._sent}
        stamps.update({name: [] for name in sorted(self.skipped)})
        return stamps


@dataclass(order=True)
class _Item:
    due: float  # event-loop time
    seq: int
    name: str = field(compare=False)
    message: dict[str, Any] = field(compare=False)
    at_send: bool = field(compare=False)
    delivery: Delivery = field(compare=False)


class SharedFeed:
    """Endpoints (name -> EndpointSpec) sharing one announcement source. `async with SharedFeed(...)`
    starts every endpoint (in the order given) and the sender; leaving stops them."""

    def __init__(
        self,
        endpoints: Mapping[str, EndpointSpec],
        *,
        api_keys: Keys = (),
        host: str = "127.0.0.1",
        heartbeat_interval: float | None = 30.0,
        ping_interval: float | None = 15.0,
        cooldown: float = 0.0,
    ) -> None:
        if not endpoints:
            raise ValueError("SharedFeed needs at least one endpoint")
        self.specs: dict[str, EndpointSpec] = dict(endpoints)
        self.endpoints: dict[str, FeedEmulator] = {
            name: FeedEmulator(
                api_keys=spec.api_keys if spec.api_keys is not None else api_keys,
                host=host,
                port=spec.port,
                heartbeat_interval=heartbeat_interval,
                ping_interval=ping_interval,
                cooldown=spec.cooldown if spec.cooldown is not None else cooldown,
                publishers=spec.publishers,
            )
            for name, spec in self.specs.items()
        }
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._last_due: dict[str, float] = {}
        self._held: dict[str, list[_Item]] = {}
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    def url(self, name: str) -> str:
        return self.endpoints[name].url

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        for emulator in self.endpoints.values():
            await emulator.start()
        self._sender = asyncio.create_task(self._send_loop(), name="shared-feed-sender")

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        for item in [*self._heap, *itertools.chain.from_iterable(self._held.values())]:
            item.delivery._sent[item.name].cancel()
        self._heap.clear()
        self._held.clear()
        for emulator in self.endpoints.values():
            await emulator.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- announcements ---------------------------------------------------------------------------

    async def announce(
        self,
        *,
        delays: Mapping[str, float] | None = None,
        dispatch_us: DispatchStamps = None,
        **fields: Any,
    ) -> dict[str, list[int]]:
        """Send one announcement (wire field names, as FeedEmulator.announce) to every endpoint that
        carries its publisher, each after its delay (`delays` overrides the specs' for this one), and
        return once all have sent it: per endpoint, the time.time_ns() stamps of its writes ([] where
        it was not sent: a publisher the endpoint does not carry, or no client). With an endpoint held,
        this returns only after `release`: use `schedule` there."""
        return await self.schedule(delays=delays, dispatch_us=dispatch_us, **fields).wait()

    def schedule(
        self,
        *,
        delays: Mapping[str, float] | None = None,
        dispatch_us: DispatchStamps = None,
        **fields: Any,
    ) -> Delivery:
        """Like `announce`, but returns at once: await the Delivery's `sent(name)` or `wait()`."""
        if self._sender is None:
            raise RuntimeError("SharedFeed is not started")
        unknown = set(delays or ()) - self.specs.keys()
        if isinstance(dispatch_us, Mapping):
            unknown |= dispatch_us.keys() - self.specs.keys()
        if unknown:
            raise KeyError(f"no such endpoint: {', '.join(sorted(unknown))}")
        message = announcement("announcement", fields)
        publisher = str(message.get("publisher", ""))
        names = [name for name, spec in self.specs.items() if spec.carries(publisher)]
        delivery = Delivery(message, frozenset(self.specs.keys() - set(names)))
        now = asyncio.get_running_loop().time()
        for name in names:
            delay = (delays or {}).get(name, self.specs[name].delay_s)
            # Never before an earlier announcement on the same endpoint: one connection is FIFO.
            due = max(now + max(delay, 0.0), self._last_due.get(name, -float("inf")))
            self._last_due[name] = due
            own = dict(message)
            if isinstance(dispatch_us, Mapping) and name in dispatch_us:
                own["dispatchTimestampUs"] = dispatch_us[name]
            delivery.messages[name] = own
            delivery._sent[name] = asyncio.get_running_loop().create_future()
            heapq.heappush(
                self._heap, _Item(due, next(self._seq), name, own, dispatch_us == "at_send", delivery)
            )
        self._wake.set()
        return delivery

    def hold(self, name: str) -> None:
        """Park announcements due on endpoint `name` until `release(name)` (faults stay independent)."""
        if name not in self.specs:
            raise KeyError(f"no such endpoint: {name}")
        self._held.setdefault(name, [])

    def release(self, name: str) -> None:
        """Let endpoint `name` send what it holds, in the order announced, and whatever follows."""
        parked = self._held.pop(name, [])
        for item in parked:
            heapq.heappush(self._heap, item)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Announcement copies not yet sent (held ones included)."""
        return len(self._heap) + sum(len(v) for v in self._held.values())

    # ---- the sender ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            wait_s = self._heap[0].due - loop.time()
            if wait_s > 0:
                # the endpoint's delay, real time; an announcement due sooner wakes us early
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
                continue
            item = heapq.heappop(self._heap)
            if item.name in self._held:
                # parked in the order it came due, which on one endpoint is the order announced
                self._held[item.name].append(item)
                continue
            await self._send(item)

    async def _send(self, item: _Item) -> None:
        future = item.delivery._sent[item.name]
        if item.at_send:
            item.message["dispatchTimestampUs"] = time.time_ns() // 1000
        try:
            stamps = await self.endpoints[item.name].announce_stamped(**item.message)
        except asyncio.CancelledError:
            future.cancel()  # stopped mid-write: whoever waits for it must not hang
            raise
        except Exception as exc:  # noqa: BLE001 - a broken endpoint fails its own delivery, not the sender
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(stamps)
