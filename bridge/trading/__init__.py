"""Trading: from an announcement on the queue to an order request, and the positions that follow.

`dispatch` drops duplicates and fans announcements out to one task per strategy; `strategy` and
`plugins` are the plugin API and its loader; `orders` is the order router (gate, risk, journal intent,
exactly one request or a paper fill via `paper`); `exits` watches open positions; `journal` is the
SQLite memory of what was seen and sent; `model` holds the plain data types strategies and the
journal share. It may import the feed's data types and the venues, never ops, sim or the
composition root.
"""
