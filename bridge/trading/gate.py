"""The trading gate: the single door to the exchange. Trading is armed only while no halt reason
is set; every order checks it immediately before it is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog

from bridge.errors import TradingHalted

log = structlog.get_logger(__name__)

HaltReason = Literal[
    "starting",  # exchanges and strategies not warmed yet
    "disconnected",  # no live feed connection with a welcome
    "feed_stale",  # no server message within heartbeat_timeout
    "key_expired",  # feed key expired or revoked: needs a human
    "credentials_rejected",  # an exchange rejected our keys
    "shutting_down",
]

Listener = Callable[[bool, frozenset[str], str], None]


class TradingGate:
    """Holds whether trading is safe. Starts halted ("starting", "disconnected")."""

    def __init__(self) -> None:
        self._reasons: set[str] = {"starting", "disconnected"}
        self._listeners: list[Listener] = []

    @property
    def armed(self) -> bool:
        return not self._reasons

    @property
    def reasons(self) -> frozenset[str]:
        return frozenset(self._reasons)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(armed, reasons, changed_reason)` on every change (notifier, sd_notify)."""
        self._listeners.append(listener)

    def halt(self, reason: HaltReason) -> None:
        if reason in self._reasons:
            return
        was_armed = self.armed
        self._reasons.add(reason)
        log.warning("trading.halted", reason=reason, reasons=sorted(self._reasons), was_armed=was_armed)
        self._notify(reason)

    def resume(self, reason: HaltReason) -> None:
        """Clear one halt reason. Trading is armed again only once every reason is cleared."""
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if self.armed:
            log.info("trading.resumed", reason=reason)
        else:
            log.info("trading.halt_cleared", reason=reason, still_halted=sorted(self._reasons))
        self._notify(reason)

    def check(self) -> None:
        """Raise TradingHalted unless armed. Called by the order path right before sending."""
        if self._reasons:
            raise TradingHalted(frozenset(self._reasons))

    def _notify(self, reason: str) -> None:
        for listener in self._listeners:
            try:
                listener(self.armed, self.reasons, reason)
            except Exception:  # a broken listener must never block a halt
                log.exception("trading.listener_failed")
