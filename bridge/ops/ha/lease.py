"""Leadership of a pair: an etcd lease on one key. The leader renews it every third of the TTL, off the
hot path, and counts it valid only until (last renewal sent + TTL - margin) on the monotonic clock; past
that (etcd silent, the process paused) it halts itself (`ha_standby`) before etcd can hand the key on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from prometheus_client import Counter, Gauge

from bridge.config import HAConfig
from bridge.errors import TradingHalted
from bridge.ops.ha.etcd import EtcdGateway, EtcdUnavailable
from bridge.telemetry import REGISTRY
from bridge.trading.gate import TradingGate

log = structlog.get_logger(__name__)

Role = Literal["leader", "standby"]

IS_LEADER = Gauge("bridge_ha_leader", "1 while this host of a pair holds the leader lease", registry=REGISTRY)
ROLE_SINCE = Gauge(
    "bridge_ha_role_since_seconds",
    "Unix time this host took its current role (leader/standby)",
    registry=REGISTRY,
)
CHANGES = Counter(
    "bridge_ha_role_changes_total", "Leader/standby changes", ["role", "reason"], registry=REGISTRY
)
RENEW_FAILURES = Counter(
    "bridge_ha_renew_failures_total", "Lease renewals that etcd did not answer in time", registry=REGISTRY
)

# Takeover work the new leader does before it arms (bridge.ops.ha.takeover), given the lease id.
Takeover = Callable[[int], Awaitable[None]]
RoleListener = Callable[[Role, str], None]


def safety_margin(ttl: float) -> float:
    """How long before the TTL the leader stops trusting its lease: a quarter of it (0.5 s of 2 s)."""
    return ttl / 4


class Leadership:
    """This host's role in the pair. Starts `standby` (gate halted with `ha_standby`); `run()` campaigns
    for the key, renews it while leading, and hands it back on the way out."""

    def __init__(
        self,
        cfg: HAConfig,
        gate: TradingGate,
        *,
        etcd: EtcdGateway | None = None,
        clock: Callable[[], float] = time.monotonic,
        takeover: Takeover | None = None,
    ) -> None:
        self.name = cfg.name
        self.key = cfg.key_prefix.rstrip("/") + "/leader"
        self.ttl = cfg.lease_ttl
        self.margin = safety_margin(cfg.lease_ttl)
        self.renew_every = cfg.lease_ttl / 3
        self.poll_every = min(0.2, cfg.lease_ttl / 8)  # a standby's look at the key: failover granularity
        self._etcd = etcd if etcd is not None else EtcdGateway(cfg.endpoints, timeout=self.renew_every)
        self._gate = gate
        self._clock = clock
        self._takeover = takeover
        self.listeners: list[RoleListener] = []
        self.role: Role = "standby"
        self.lease: int | None = None
        self.holder: str | None = None  # the leader's name as last seen in etcd
        self._valid_until = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._since_mono = clock()
        self._since_wall = time.time()
        self._armed = asyncio.Event()  # set once a takeover finished and the gate is open (tests wait)
        self._background: set[asyncio.Task[None]] = set()
        gate.halt("ha_standby")
        IS_LEADER.set(0)
        ROLE_SINCE.set(self._since_wall)

    # ---- the order path's side: synchronous ---------------------------------------------------------

    def fence(self) -> int:
        """The lease id an order is sent under (journal.fence): only while this host leads and its lease
        is proven at this instant. Otherwise it halts (`ha_standby`) and raises TradingHalted: after a
        pause (SIGSTOP) the first order checks the clock before any timer has had a chance to run."""
        lease = self.lease
        if self.role == "leader" and lease is not None and self._clock() < self._valid_until:
            return lease
        self._lose("lease_unproven")
        raise TradingHalted(frozenset({"ha_standby"}))

    def takeover_with(self, takeover: Takeover) -> None:
        """What to do on becoming leader, before arming (set before `run`)."""
        self._takeover = takeover

    @property
    def leading(self) -> bool:
        return self.role == "leader" and self._armed.is_set()

    async def wait_armed(self) -> None:
        await self._armed.wait()

    def snapshot(self) -> dict[str, Any]:
        """/health's and the status line's `ha` part."""
        return {
            "role": self.role,
            "since": datetime.fromtimestamp(self._since_wall, UTC).isoformat(timespec="seconds"),
            "since_s": round(self._clock() - self._since_mono, 1),
            "name": self.name,
            "leader": self.holder,
            "lease": self.lease,
        }

    # ---- the loop -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign (standby) or renew (leader) until `stop`; then revoke a lease held, so the other host
        takes over at once instead of after the TTL."""
        try:
            while not stop.is_set():
                if self.role == "leader":
                    await self._renew()
                    pause = self.renew_every
                else:
                    await self._campaign()
                    pause = self.poll_every
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
        finally:
            lease = self.lease
            self._lose("stopping")
            if lease is not None:
                with contextlib.suppress(EtcdUnavailable):
                    await self._etcd.revoke(lease, within=0.5)
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            await self._etcd.close()

    async def _campaign(self) -> None:
        try:
            holder = await self._etcd.get(self.key)
            if holder is not None:
                self.holder = holder.name
                return
            sent = self._clock()  # before the grant: the lease's TTL starts later, at etcd
            lease = await self._etcd.grant(self.ttl)
            taken = await self._etcd.create(self.key, self.name, lease)
        except EtcdUnavailable as exc:
            log.debug("ha.etcd_unavailable", error=str(exc))
            self.holder = None
            return
        if taken is not None or self._clock() >= sent + self.ttl - self.margin:
            self.holder = taken.name if taken is not None else None
            self._spawn(self._revoke(lease), "ha-revoke")
            return
        self.holder = self.name
        self.lease = lease
        self._prove(sent)
        self._set_role("leader", "lease_taken")
        self._spawn(self._take_over(lease), "ha-takeover")

    async def _take_over(self, lease: int) -> None:
        """Before arming: reconcile what the old leader may have sent (takeover), then open the gate,
        unless the lease was lost meanwhile."""
        started = self._clock()
        if self._takeover is not None:
            try:
                await self._takeover(lease)
            except TradingHalted:
                log.warning("ha.takeover_interrupted", lease=lease, reason="lease lost during the takeover")
            except Exception:  # a takeover that failed must not leave the pair without a leader
                log.exception("ha.takeover_failed", lease=lease)
        if self.role != "leader" or self.lease != lease:
            return
        self._gate.resume("ha_standby")
        self._armed.set()
        log.warning("ha.armed", lease=lease, takeover_ms=round((self._clock() - started) * 1000, 1))

    async def _renew(self) -> None:
        lease = self.lease
        if lease is None:
            return
        sent = self._clock()
        budget = max(0.05, self._valid_until - sent)
        try:
            left = await self._etcd.keepalive(lease, within=budget)
            holder = await self._etcd.get(self.key, within=max(0.05, self._valid_until - self._clock()))
        except EtcdUnavailable as exc:
            RENEW_FAILURES.inc()
            log.warning("ha.renew_failed", lease=lease, error=str(exc), valid_for_s=round(budget, 2))
            return  # the expiry timer halts at the deadline unless a later renewal succeeds
        if self.lease != lease:
            return
        if left <= 0:
            self._lose("lease_gone")
        elif holder is None or holder.lease != lease:
            self.holder = None if holder is None else holder.name
            self._lose("key_taken")
        else:
            self._prove(sent)

    def _prove(self, sent: float) -> None:
        """The lease is alive as of `sent` (a grant or renewal sent then was answered): valid until
        sent + TTL - margin; a timer halts at that instant unless proven again."""
        self._valid_until = sent + self.ttl - self.margin
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, self._valid_until - self._clock())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._check_expiry)

    def _check_expiry(self) -> None:
        if self.role == "leader" and self._clock() >= self._valid_until:
            self._lose("lease_unproven")
        elif self.role == "leader":  # the loop's timer fired early by its own clock: look again then
            delay = self._valid_until - self._clock()
            self._expiry = asyncio.get_running_loop().call_later(delay, self._check_expiry)

    def _lose(self, reason: str) -> None:
        """Stop leading at once: halt entries and exits, forget the lease (revoked in the background)."""
        if self.role != "leader":
            return
        lease = self.lease
        self.lease = None
        self._armed.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._gate.halt("ha_standby")  # first: nothing may be sent from here on
        self._set_role("standby", reason)
        if lease is not None and reason != "stopping":
            self._spawn(self._revoke(lease), "ha-revoke")

    def _set_role(self, role: Role, reason: str) -> None:
        self.role = role
        self._since_mono, self._since_wall = self._clock(), time.time()
        IS_LEADER.set(1 if role == "leader" else 0)
        ROLE_SINCE.set(self._since_wall)
        CHANGES.labels(role, reason).inc()
        log.warning("ha.role", role=role, reason=reason, name=self.name, lease=self.lease)
        for listener in self.listeners:
            try:
                listener(role, reason)
            except Exception:  # an alert must never stop a halt
                log.exception("ha.listener_failed")

    async def _revoke(self, lease: int) -> None:
        with contextlib.suppress(EtcdUnavailable):
            await self._etcd.revoke(lease, within=self.renew_every)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
