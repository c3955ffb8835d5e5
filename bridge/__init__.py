"""bridge: cryptolisting.ws announcements -> strategy plugins -> ccxt orders.

The public API, and the only module a strategy plugin (or its test) needs to import:
- to write a strategy: `Strategy`, `Context`, `Announcement`, `ExitPlan` (with `TakeProfitTier`),
  `OrderOutcome`, and the
  types the context hands back, `Market` and `OrderResult`;
- to test one offline: `load_config_text` (a config from a string) and `run_replay` (a stream
  through the configured strategies, paper only), as the test `bridge new-strategy` writes does.
Everything else in the package is internal and may move. Names are imported lazily, so commands
that never trade (emulate, show-config) do not pay for importing ccxt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.config import loads as load_config_text
    from bridge.replay import replay as run_replay
    from bridge.trading.model import Announcement, ExitPlan, OrderOutcome, OrderResult, TakeProfitTier
    from bridge.trading.strategy import Context, Strategy
    from bridge.venues.types import Market

__all__ = [
    "Announcement",
    "Context",
    "ExitPlan",
    "Market",
    "OrderOutcome",
    "OrderResult",
    "Strategy",
    "TakeProfitTier",
    "load_config_text",
    "run_replay",
]

_WHERE = {
    "Announcement": ("bridge.trading.model", "Announcement"),
    "ExitPlan": ("bridge.trading.model", "ExitPlan"),
    "TakeProfitTier": ("bridge.trading.model", "TakeProfitTier"),
    "OrderOutcome": ("bridge.trading.model", "OrderOutcome"),
    "OrderResult": ("bridge.trading.model", "OrderResult"),
    "Market": ("bridge.venues.types", "Market"),
    "Context": ("bridge.trading.strategy", "Context"),
    "Strategy": ("bridge.trading.strategy", "Strategy"),
    "load_config_text": ("bridge.config", "loads"),
    "run_replay": ("bridge.replay", "replay"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module, attr = _WHERE[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
