"""Venues bridge knows only the client-id format of: ccxt's unified behaviour otherwise (not proven)."""

from __future__ import annotations

from bridge.venues.dialect import Dialect


class KucoinDialect(Dialect):
    """KuCoin's clientOid: up to 40 characters."""

    client_id_max = 40
