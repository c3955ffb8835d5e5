"""OKX (ccxt `okx`): client id `clOrdId`, at most 32 letters and digits."""

from __future__ import annotations

from bridge.venues.dialect import Dialect


class OkxDialect(Dialect):
    client_id_max = 32
