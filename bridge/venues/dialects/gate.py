"""Gate (ccxt `gate`): client id `text`, which must start with "t-" and hold at most 28 characters after it."""

from __future__ import annotations

from bridge.venues.dialect import Dialect


class GateDialect(Dialect):
    client_id_prefix = "t-"
    client_id_max = 30
