"""A daemon's place in a hot-standby pair, wired in a few calls: `Pair.create` (before startup: trading
starts halted `ha_standby`), `attach` (once the trading system is built: fencing, would-be orders,
takeover, then campaigning), `snapshot` (/health, status line) and `close` (hands the lease back).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from bridge.config import Config
from bridge.ops.ha.lease import Leadership, Role
from bridge.ops.ha.takeover import StandbyLedger, Takeover
from bridge.ops.notify import Notifier
from bridge.trading.gate import TradingGate

if TYPE_CHECKING:
    from bridge.system import TradingSystem

log = structlog.get_logger(__name__)


class Pair:
    def __init__(self, config: Config, gate: TradingGate, notifier: Notifier | None = None) -> None:
        assert config.ha is not None
        self.config = config
        self.ledger = StandbyLedger()
        self.leadership = Leadership(config.ha, gate)
        self._notifier = notifier
        self.leadership.listeners.append(self._alert)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, config: Config, gate: TradingGate, notifier: Notifier | None = None) -> Pair | None:
        """The pair's wiring when the config has an `ha:` section; None (nothing changes) otherwise."""
        return None if config.ha is None else cls(config, gate, notifier)

    def attach(self, system: TradingSystem) -> None:
        """Fence every journaled order with the lease, keep the would-be orders, start campaigning."""
        system.journal.fence = self.leadership.fence
        system.router.on_held = self.ledger.hold
        self.leadership.takeover_with(
            Takeover(
                ledger=self.ledger,
                journal=system.journal,
                router=system.router,
                exits=system.exits.orders,
                exchanges=system.exchanges,
                max_event_age=self.config.trading.max_event_age,
            )
        )
        self._task = asyncio.create_task(self.leadership.run(self._stop), name="ha-lease")

    def snapshot(self) -> dict[str, Any]:
        return {**self.leadership.snapshot(), "would_send_held": len(self.ledger)}

    def status_text(self) -> str:
        """The systemd status line's part: `leader since 08:01:02Z` or `standby since ...`."""
        snap = self.leadership.snapshot()
        return f"{snap['role']} since {snap['since']}"

    async def close(self) -> None:
        """Stop renewing and revoke the lease (the other host takes over at once), bounded in time."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _alert(self, role: Role, reason: str) -> None:
        if self._notifier is not None:
            self._notifier.ha_role(role, reason=reason, name=self.leadership.name)
