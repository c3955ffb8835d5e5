"""ctx.exchange(id): a read-only view of a real ccxt binance instance pointed at FakeBinance. Reads
work; orders, raw endpoints and credentials are refused; nothing secret shows."""

from __future__ import annotations

import copy
import pickle
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.config import ExchangeConfig, TradingConfig
from bridge.replay import ReplayExchange
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.orders import OrderRouter
from bridge.trading.readonly import ALLOWED, CREDENTIALS, ReadOnlyExchange
from bridge.trading.risk import RiskLimits
from bridge.trading.strategy import Context
from bridge.venues.exchange import Exchange

# What a strategy could use to trade, move funds or read the keys on the raw object: each exists on
# ccxt's binance (checked below), and each is refused by the view.
REFUSED = (
    "create_order",
    "create_market_buy_order",
    "create_limit_sell_order",
    "cancel_order",
    "cancel_all_orders",
    "edit_order",
    "withdraw",
    "transfer",
    "private_post_order",
    "privatePostOrder",
    "private_delete_order",
    "sapi_post_asset_transfer",
    "sapiPostAssetTransfer",
    "fetch2",
    "request",
    "sign",
    "load_markets",
    "set_sandbox_mode",
    "close",
    "options",
    "session",
    "headers",
    "apiKey",
    "secret",
    "password",
    "uid",
    "privateKey",
    "walletAddress",
)


@dataclass
class Rig:
    fake: FakeBinance
    exchange: Exchange
    ctx: Context


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake:
        cfg = ExchangeConfig(
            api_key=Secret(fake.api_key),
            secret=Secret(fake.secret),
            ccxt={**fake.ccxt_config(), "timeout_on_exit": 0},
        )
        exchange = Exchange("binance", cfg, dry_run=False)
        await exchange.start(check_keys=False)
        journal = Journal.open(tmp_path, dry_run=False)
        exchanges = {"binance": exchange}
        router = OrderRouter(
            gate=TradingGate(),
            risk=RiskLimits(TradingConfig(dry_run=False), journal),
            journal=journal,
            exchanges=exchanges,
            dry_run=False,
        )
        try:
            yield Rig(
                fake, exchange, Context(strategy="s", router=router, exchanges=exchanges, dry_run=False)
            )
        finally:
            await exchange.close()
            journal.close()


async def test_reads_pass_through(rig: Rig) -> None:
    """Cached markets, precision helpers, public market data and signed reads work as on ccxt."""
    view = rig.ctx.exchange("binance")
    assert isinstance(view, ReadOnlyExchange)
    assert view.id == "binance" and "ABC/USDT" in view.symbols and view.has["fetchTicker"]
    assert view.market("ABC/USDT")["id"] == "ABCUSDT" == view.markets["ABC/USDT"]["id"]
    assert float(view.amount_to_precision("ABC/USDT", 1.234567891)) == pytest.approx(1.23456789)
    ticker = await view.fetch_ticker("ABC/USDT")
    assert ticker["symbol"] == "ABC/USDT" and ticker["last"] == pytest.approx(2.0)
    balance = await view.fetch_balance()  # signed, with the keys the view never shows
    assert balance["USDT"]["free"] == pytest.approx(100000.0)
    assert rig.fake.count("GET", "/api/v3/account") == 1


async def test_writes_raw_endpoints_and_keys_are_refused(rig: Rig) -> None:
    """Everything off the allow-list raises PermissionError naming ctx.buy / ctx.sell, however it is
    reached (attribute, getattr, hasattr); setting or deleting is refused too. Nothing is sent."""
    raw = rig.exchange.ccxt
    view = rig.ctx.exchange("binance")
    for name in REFUSED:
        assert hasattr(raw, name), f"ccxt binance has no {name}: pick a name it has"
        with pytest.raises(PermissionError, match=r"ctx\.buy / ctx\.sell") as refused:
            getattr(view, name)
        assert f"ctx.exchange('binance').{name}" in str(refused.value)
    with pytest.raises(PermissionError, match="credentials are never handed to strategies"):
        _ = view.secret
    with pytest.raises(PermissionError):
        hasattr(view, "create_order")
    with pytest.raises(PermissionError, match="credentials"):
        view.apiKey = "mine"
    with pytest.raises(PermissionError, match="read-only"):
        view.markets = {}
    with pytest.raises(PermissionError):
        del view.markets
    assert raw.apiKey == rig.fake.api_key and raw.markets
    assert rig.fake.count("POST", "/api/v3/order") == 0


async def test_the_view_hands_out_no_way_back_to_the_raw_object(rig: Rig) -> None:
    """A forwarded method is a plain function (no `__self__` to reach ccxt through); the view's state,
    pickling and copying are refused; `dir()` lists the allow-list only."""
    view = rig.ctx.exchange("binance")
    method = view.fetch_ticker
    assert method.__name__ == "fetch_ticker" and not hasattr(method, "__self__")
    assert not hasattr(method, "__wrapped__")
    for name in ("_target", "__getstate__", "__reduce__", "__reduce_ex__"):
        with pytest.raises(PermissionError):
            getattr(view, name)
    with pytest.raises(PermissionError):
        pickle.dumps(view)
    with pytest.raises(PermissionError):
        copy.copy(view)
    assert dir(view) == sorted(ALLOWED)
    assert not CREDENTIALS & set(dir(view))


async def test_repr_and_dir_show_no_secret(rig: Rig) -> None:
    view = rig.ctx.exchange("binance")
    shown = " ".join([repr(view), str(view), f"{view}", *dir(view)])
    assert rig.fake.secret not in shown and rig.fake.api_key not in shown
    assert "ctx.buy / ctx.sell" in repr(view)


async def test_the_allow_list_names_what_ccxt_has(rig: Rig) -> None:
    """Every allowed name exists on ccxt's binance: a rename in ccxt shows up here, not in a plugin."""
    raw = rig.exchange.ccxt
    assert [name for name in sorted(ALLOWED) if not hasattr(raw, name)] == []


def test_an_exchange_without_ccxt_says_so(tmp_path: Path) -> None:
    """Replay's in-memory exchange has no ccxt object: reads explain that; writes are refused as live."""
    exchanges = {"binance": ReplayExchange("binance", {"ABC/USDT": 1.0})}
    journal = Journal.open(tmp_path, dry_run=True)
    try:
        router = OrderRouter(
            gate=TradingGate(),
            risk=RiskLimits(TradingConfig(), journal),
            journal=journal,
            exchanges=exchanges,
            dry_run=True,
        )
        view = Context(strategy="s", router=router, exchanges=exchanges, dry_run=True).exchange("binance")
        with pytest.raises(AttributeError, match="no ccxt object"):
            _ = view.fetch_ticker
        with pytest.raises(PermissionError, match=r"ctx\.buy / ctx\.sell"):
            _ = view.create_order
    finally:
        journal.close()
