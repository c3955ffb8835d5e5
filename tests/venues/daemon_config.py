"""One daemon config for the venue tests that run the whole daemon: the feed emulator, one account on a
venue's fake, and listing_buy on it with extra params (tests/test_daemon.py's settings otherwise)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge import config as config_mod
from bridge.sim.emulator import FeedEmulator
from tests.test_daemon import KEY, STRATEGIES


def venue_daemon_config(
    emu: FeedEmulator, fake: Any, state: Path, *, name: str, params: str = "", swap: bool = False
) -> config_mod.Config:
    """`fake`: any of bridge.sim's venue fakes (api_key, secret, ccxt_config(); an OKX fake's
    passphrase too). `swap`: the account also loads the USDT perpetuals. `params`: appended to
    listing_buy's, e.g. ", market: swap, leverage: 2"."""
    account: dict[str, Any] = {"api_key": fake.api_key, "secret": fake.secret, "ccxt": fake.ccxt_config()}
    if hasattr(fake, "passphrase"):
        account["password"] = fake.passphrase
    if swap:
        account["market_types"] = ["spot", "swap"]
    text = f"""
feed:
  url: {emu.url}
  api_key: {KEY}
  cex: [binance, upbit]
  heartbeat_timeout: 5
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
exchanges:
  {name}: {json.dumps(account)}
trading: {{dry_run: false, max_event_age: 10, max_order_cost: 100}}
state_dir: {state}
strategies:
  - name: listing_buy
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: {name}, quote: USDT, cost: 20, publishers: [upbit, binance]{params}}}
"""
    return config_mod.loads(text, source="test.yaml")
