"""Venues: the exchanges, through ccxt. The only place in bridge that imports ccxt.

The adapter (`exchange`, its lifecycle and markets in `session`) with its order requests and lookups;
what differs per venue (client-id format, lookups, stops, budgets, contract setup) in its `dialect`
(`dialect.Dialect`, one subclass per venue family in `dialects/`);
resting stops and cancels (`stops`), the one table that turns ccxt's exceptions into `bridge.errors`, the
Binance fast path, the terms of a price-capped limit order (`precision`), best bid/ask quotes (`quotes`)
and the per-account request budget (`ratelimit`). Venues answer in the project's own types (Market,
OrderRequest, OrderResult); they import nothing from feed, trading, ops or sim.
"""
