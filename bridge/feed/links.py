"""Every feed link at once: one supervisor per link (`feed.links`, or the single `feed:` block), each
with its own connection, backoff, Retry-After and fatal-error handling, all reading into the one
announcement queue (the dispatcher keeps the first arrival of each announcement and drops the rest).

A link whose key is rejected, or that is refused as unauthenticated, stops (its status sink holds the
reason, e.g. `key_expired:kr`); the others go on. Only when every link has stopped for good does
`run()` raise, so the daemon exits 77/78 (via exits-only mode if positions are open) only when no
link is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from bridge.aio import Sleep
from bridge.config import FeedConfig
from bridge.errors import BridgeError, ConfigError
from bridge.feed.codec import Announcement, Welcome
from bridge.feed.supervisor import FeedStatusSink, KeyPacer, State, Supervisor

log = structlog.get_logger(__name__)

# Which link's state the whole feed shows: the best of them.
_STATE_RANK: dict[State, int] = {"connected": 3, "connecting": 2, "backoff": 1, "stopped": 0}


class FeedLinks:
    """Looks like one Supervisor to its callers (the daemon, /health): `state`, `welcome`,
    `last_message_at`, `connected_since`, `run()`, `stop()`; `links` gives each link's own."""

    def __init__(self, supervisors: Sequence[Supervisor]) -> None:
        if not supervisors:
            raise ValueError("FeedLinks needs at least one link")
        self.links: tuple[Supervisor, ...] = tuple(supervisors)
        self._stopping = False

    @classmethod
    def build(
        cls,
        cfg: FeedConfig,
        status_for: Callable[[str | None], FeedStatusSink],
        queue: asyncio.Queue[Announcement],
        *,
        sleep: Sleep = asyncio.sleep,
        on_welcome: Callable[[Welcome], None] | None = None,
        on_frame_for: Callable[[str | None], Callable[[bytes, int], None] | None] | None = None,
    ) -> FeedLinks:
        """A supervisor per link of `cfg`, each with its own status sink (`status_for(link name)`) and
        frame listener (`on_frame_for(link name)`); links that share a key are paced apart."""
        configs = cfg.link_configs()
        pacer = KeyPacer(sleep=sleep) if len(configs) > 1 else None
        return cls(
            [
                Supervisor(
                    link,
                    status_for(link.name),
                    queue,
                    sleep=sleep,
                    on_welcome=on_welcome,
                    on_frame=on_frame_for(link.name) if on_frame_for is not None else None,
                    pacer=pacer,
                )
                for link in configs
            ]
        )

    # ---- the whole feed, as one supervisor would show it ------------------------------------------------

    @property
    def state(self) -> State:
        return max((s.state for s in self.links), key=_STATE_RANK.__getitem__)

    @property
    def welcome(self) -> Welcome | None:
        """A connected link's last welcome, else any link's."""
        connected = [s.welcome for s in self.links if s.state == "connected" and s.welcome is not None]
        anyone = [s.welcome for s in self.links if s.welcome is not None]
        found = connected or anyone
        return found[0] if found else None

    @property
    def last_message_at(self) -> float | None:
        times = [t for s in self.links if (t := s.last_message_at) is not None]
        return max(times) if times else None

    @property
    def connected_since(self) -> float | None:
        times = [t for s in self.links if (t := s.connected_since) is not None]
        return min(times) if times else None

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every link until `stop()`, or until every link has stopped for good; then raise the
        reason (a ConfigError, exit 78, before a CredentialsRejected, exit 77: a config to fix is
        the first thing a human must do)."""
        if len(self.links) == 1:
            await self.links[0].run()  # the single link: exactly as it always ran
            return
        tasks = {asyncio.create_task(s.run(), name=f"feed-link:{s.link}"): s for s in self.links}
        failures: list[BridgeError] = []
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = _fatal(task)
                    if error is None:
                        continue
                    failures.append(error)
                    if pending and not self._stopping:
                        up = sorted(str(tasks[t].link) for t in pending)
                        log.error(
                            "feed.link_dead",
                            link=tasks[task].link,
                            error=str(error),
                            links_left=up,
                            action="trading goes on over the links left; this link needs a human",
                        )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if failures and not self._stopping:
            raise next((e for e in failures if isinstance(e, ConfigError)), failures[0])

    def stop(self) -> None:
        self._stopping = True
        for supervisor in self.links:
            supervisor.stop()


def _fatal(task: asyncio.Task[None]) -> BridgeError | None:
    """The link's fatal error, if it ended with one (a crash is re-raised: it is a bug)."""
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is None:
        return None
    if isinstance(exc, BridgeError):
        return exc
    raise exc
