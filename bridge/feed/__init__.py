"""The feed: everything between the cryptolisting.ws socket and the announcement queue.

`codec` decodes frames (pure, no I/O, no clock), `client` holds one connection and only decodes,
enqueues and counts, `supervisor` reconnects with backoff and turns fatal answers into exit errors,
`recorder` writes raw frames for replay, `metrics` holds the feed's own counters. It knows nothing
downstream: it may import only the top-level base modules (config, errors, aio, retry, telemetry),
never trading, venues, ops or sim; it reports whether it can be trusted through a status sink the
composition root wires to the trading gate.
"""
