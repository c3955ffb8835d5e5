"""bridge: cryptolisting.ws announcements -> strategy plugins -> ccxt orders.

The public plugin API: `Strategy`, `Context`, `Announcement`, `ExitPlan`, `OrderOutcome`. Imported lazily, so
commands that never trade (emulate, show-config) do not pay for importing ccxt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.codec import Announcement
    from bridge.journal import ExitPlan
    from bridge.orders import OrderOutcome
    from bridge.strategy import Context, Strategy

__all__ = ["Announcement", "Context", "ExitPlan", "OrderOutcome", "Strategy"]

_WHERE = {
    "Announcement": "bridge.codec",
    "ExitPlan": "bridge.journal",
    "OrderOutcome": "bridge.orders",
    "Context": "bridge.strategy",
    "Strategy": "bridge.strategy",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
