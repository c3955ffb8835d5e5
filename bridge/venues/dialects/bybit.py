"""Bybit (ccxt `bybit`): client id `orderLinkId`, at most 36 characters."""

from __future__ import annotations

from bridge.venues.dialect import Dialect


class BybitDialect(Dialect):
    client_id_max = 36
