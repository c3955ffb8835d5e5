"""bridge: cryptolisting.ws announcements -> strategy plugins -> ccxt orders.

The public plugin API: `Strategy`, `Context`, `Announcement`, `ExitPlan`, `OrderOutcome`. Imported lazily, so
commands that never trade (emulate, show-config) do not pay for importing ccxt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.feed.codec import Announcement
    from bridge.trading.journal import ExitPlan
    from bridge.trading.orders import OrderOutcome
    from bridge.trading.strategy import Context, Strategy

__all__ = ["Announcement", "Context", "ExitPlan", "OrderOutcome", "Strategy"]

_WHERE = {
    "Announcement": "bridge.feed.codec",
    "ExitPlan": "bridge.trading.journal",
    "OrderOutcome": "bridge.trading.orders",
    "Context": "bridge.trading.strategy",
    "Strategy": "bridge.trading.strategy",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
