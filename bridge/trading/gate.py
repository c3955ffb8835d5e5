"""The trading gate: the single door to the exchange. It holds the halt reasons now in force (see
bridge.trading.halts for what each one stops); every order asks it, right before it is sent, whether
an entry or an exit may go to its exchange.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from bridge.errors import TradingHalted
from bridge.trading.halts import HaltReason, halt_key, rule_for, split_key

__all__ = ["HaltReason", "Listener", "TradingGate"]

log = structlog.get_logger(__name__)

Listener = Callable[[bool, frozenset[str], str], None]


class TradingGate:
    """Holds the halt reasons in force. Starts halted ("starting", "disconnected").

    A reason scoped to one venue is held as "reason:venue" (e.g. "credentials_rejected:binance") and
    stops that venue only; `reasons` lists every key, scoped or not."""

    def __init__(self) -> None:
        self._reasons: set[str] = {"starting", "disconnected"}
        self._listeners: list[Listener] = []

    @property
    def armed(self) -> bool:
        """No halt reason at all, on any venue."""
        return not self._reasons

    @property
    def reasons(self) -> frozenset[str]:
        return frozenset(self._reasons)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(armed, reasons, changed_key)` on every change (notifier, sd_notify, daemon)."""
        self._listeners.append(listener)

    def halt(self, reason: HaltReason, *, venue: str | None = None) -> None:
        """Set a halt reason; `venue` scopes a venue-scoped reason to that exchange. Without `venue` a
        venue-scoped reason stops every venue."""
        if venue is not None and rule_for(reason).scope != "venue":
            # Halting more than asked is safe; ignoring a halt is not.
            log.error("trading.halt_scope_ignored", reason=reason, venue=venue)
            venue = None
        key = halt_key(reason, venue)
        if key in self._reasons:
            return
        was_armed = self.armed
        self._reasons.add(key)
        log.warning(
            "trading.halted", reason=reason, venue=venue, reasons=sorted(self._reasons), was_armed=was_armed
        )
        self._notify(key)

    def resume(self, reason: HaltReason, *, venue: str | None = None) -> None:
        """Clear one halt reason (for `venue` only, when given). Trading is armed again only once every
        reason is cleared."""
        key = halt_key(reason, venue)
        if key not in self._reasons:
            return
        self._reasons.discard(key)
        if self.armed:
            log.info("trading.resumed", reason=reason, venue=venue)
        else:
            log.info("trading.halt_cleared", reason=reason, venue=venue, still_halted=sorted(self._reasons))
        self._notify(key)

    def entry_blockers(self, exchange: str) -> frozenset[str]:
        """The reasons (keys) that stop a new entry on `exchange`: global ones that block entries, plus
        that venue's own."""
        if not self._reasons:  # the order path's usual case: nothing to look at
            return frozenset()
        return frozenset(k for k in self._reasons if _applies(k, exchange) and rule_for(k).blocks_entries)

    def exit_blockers(self, exchange: str) -> frozenset[str]:
        """The reasons (keys) that stop an exit (a sell that reduces a position) on `exchange`."""
        if not self._reasons:
            return frozenset()
        return frozenset(k for k in self._reasons if _applies(k, exchange) and rule_for(k).blocks_exits)

    def entries_armed(self, exchange: str) -> bool:
        """Whether a new entry may go to `exchange` now."""
        return not self.entry_blockers(exchange)

    def exits_armed(self, exchange: str) -> bool:
        """Whether an exit may go to `exchange` now."""
        return not self.exit_blockers(exchange)

    def halted_on(self, reason: HaltReason, exchange: str) -> bool:
        """Whether `reason` is in force for `exchange` (set for that venue or for every venue)."""
        return reason in self._reasons or halt_key(reason, exchange) in self._reasons

    def check(self, exchange: str | None = None) -> None:
        """Raise TradingHalted with the reasons that stop a new entry on `exchange` (every reason when
        None). Called by the order path right before sending."""
        blockers = self.reasons if exchange is None else self.entry_blockers(exchange)
        if blockers:
            raise TradingHalted(blockers)

    def _notify(self, key: str) -> None:
        for listener in self._listeners:
            try:
                listener(self.armed, self.reasons, key)
            except Exception:  # a broken listener must never block a halt
                log.exception("trading.listener_failed")


def _applies(key: str, exchange: str) -> bool:
    venue = split_key(key)[1]
    return venue is None or venue == exchange
