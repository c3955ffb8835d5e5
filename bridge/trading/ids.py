"""The one client order id spec. Every order bridge sends, entry or exit, gets its id here and only here.

id = "bx" + 24 hex digits of BLAKE2b-96 over (announcement key, strategy, account, symbol, side, leg,
attempt): 26 letters and digits, deterministic, so the journal and the venue recognise a second try of
the same order. The venue adapter then encodes it within the venue's rules (`Exchange.
format_client_order_id`: Binance and Bybit at most 36 characters, OKX at most 32 alphanumerics, Gate
`t-` followed by at most 28); 26 characters fit every one of them unchanged.
- account: the exchange account the order goes to (today the `exchanges:` key).
- leg: a strategy's name for one of several orders on one symbol for one announcement ("" by default).
- attempt: 0 for the first request; exits that must be re-sent count up, so each attempt has its own id
  and an attempt whose outcome is unknown can be looked up before the next is sent.
With leg "" and attempt 0 the id is the one bridge made before legs and attempts existed, so journals
written by earlier versions keep recognising their orders.
"""

from __future__ import annotations

import hashlib
import re

LEG = re.compile(r"[a-z0-9_]{1,16}")


def client_order_id(
    announcement_key: str,
    strategy: str,
    account: str,
    symbol: str,
    side: str,
    *,
    leg: str = "",
    attempt: int = 0,
) -> str:
    """The deterministic id of one order (see the module docstring)."""
    if leg and not LEG.fullmatch(leg):
        raise ValueError(f"leg must be 1-16 of a-z, 0-9 and _, got {leg!r}")
    if attempt < 0:
        raise ValueError("attempt counts from 0")
    fields = [announcement_key, strategy, account, symbol, side]
    if leg or attempt:
        fields += [leg, str(attempt)]
    src = "\x1f".join(fields)
    return "bx" + hashlib.blake2b(src.encode(), digest_size=12).hexdigest()
