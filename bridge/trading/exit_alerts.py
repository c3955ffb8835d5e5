"""Where exit trouble is reported: the protocol the exit manager alerts through (the daemon's notifier
implements it) and the silent stand-in used when nobody listens."""

from __future__ import annotations

from typing import Protocol


class ExitAlerts(Protocol):
    """Where exit trouble is reported (the daemon's notifier)."""

    def exit_failed(self, exchange: str, symbol: str, client_order_id: str | None, reason: str) -> None: ...

    def position_abandoned(
        self, exchange: str, symbol: str, entry_client_order_id: str, reason: str
    ) -> None: ...


class NoAlerts:
    """Alerts nobody listens to (tests, replay)."""

    def exit_failed(self, exchange: str, symbol: str, client_order_id: str | None, reason: str) -> None:
        return None

    def position_abandoned(self, exchange: str, symbol: str, entry_client_order_id: str, reason: str) -> None:
        return None
