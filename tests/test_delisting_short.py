"""The bundled delisting_short strategy: a delisting announcement becomes a short of the coin's USDT
perpetual (margin and leverage set first), with a reduce-only stop resting above the entry and a time
exit that buys back; other announcements, coins without a perpetual and a second publisher's copy are
not traded. Through the whole daemon (feed emulator -> strategy -> real ccxt -> FakeBinanceFutures) and
through the strategy's context with an injected clock for the time exit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge import config as config_mod
from bridge.config_lint import lint
from bridge.errors import ConfigError
from bridge.schema import build
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_binance_futures import FakeBinanceFutures
from bridge.trading.exits import ExitManager
from bridge.trading.strategy import Context
from strategies.delisting_short import DelistingShort, DelistingShortParams
from tests.factories import announcement
from tests.test_daemon import KEY, STRATEGIES, start
from tests.venues.test_binanceusdm_trading import Clock, make_rig

SWAP = "ABC/USDT:USDT"


def daemon_config(
    emu: FeedEmulator, fake: FakeBinanceFutures, state: Path, *, market_types: str
) -> config_mod.Config:
    text = f"""
feed:
  url: {emu.url}
  api_key: {KEY}
  cex: [binance, upbit]
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
exchanges:
  binance:
    api_key: {fake.api_key}
    secret: {fake.secret}
    market_types: {market_types}
    ccxt: {json.dumps(fake.ccxt_config())}
trading: {{dry_run: false, max_event_age: 10, max_order_cost: 100}}
state_dir: {state}
strategies:
  - name: delisting_short
    module: {STRATEGIES}/delisting_short.py
    params: {{exchange: binance, cost: 20, leverage: 2, stop_loss: 0.15, exit_after: 3600}}
"""
    return config_mod.loads(text, source="test.yaml")


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeBinanceFutures]]:
    async with (
        FakeBinanceFutures(
            markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)], perps=[("ABC", "USDT", 2.0)]
        ) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        yield emu, fake


async def test_a_delisting_is_shorted_on_the_perpetual_with_a_stop_resting_above(
    servers: tuple[FeedEmulator, FakeBinanceFutures], tmp_path: Path
) -> None:
    """Binance's spot delisting of ABC and DEF: ABC's perpetual is sold short at 2x isolated (40 USDT for
    20 of margin), its reduce-only stop rests at +15 %; DEF has no perpetual; Upbit's copy of the news
    and a spot listing order nothing."""
    emu, fake = servers
    r = await start(daemon_config(emu, fake, tmp_path, market_types="[spot, swap]"))
    try:
        await emu.announce(
            title="Binance Will Delist ABC, DEF",
            ticker="ABC,DEF",
            publisher="binance",
            listingType="spot_delisting",
        )
        await emu.announce(
            title="[Upbit] ABC delisting", ticker="ABC", publisher="upbit", listingType="spot_delisting"
        )
        await emu.announce(
            title="Binance Will List ABC", ticker="ABC", publisher="binance", listingType="spot_listing"
        )
        await r.settle(3)
        await asyncio.wait_for(r.until(lambda: len(fake.open_algo_orders(SWAP)) == 1), 10)
    finally:
        await r.stop()
    assert len(fake.orders) == 1
    entry = fake.orders[0].params
    assert (entry["symbol"], entry["side"], entry["type"], entry["timeInForce"]) == (
        "ABCUSDT",
        "SELL",
        "LIMIT",
        "IOC",
    )
    assert "reduceOnly" not in entry
    assert float(entry["price"]) * float(entry["quantity"]) <= 40.0 + 1e-9
    setting = fake.perps.settings["ABCUSDT"]
    assert (setting.leverage, setting.margin_type) == (2, "ISOLATED")
    assert fake.position_amount(SWAP) < 0
    stop = fake.open_algo_orders(SWAP)[0]
    assert (stop.side, stop.order_type, stop.reduce_only) == ("BUY", "STOP_MARKET", True)
    assert stop.trigger_price == pytest.approx(2.0 * 1.15, abs=0.01)
    assert stop.quantity == pytest.approx(-fake.position_amount(SWAP))


def test_check_config_refuses_an_exchange_that_does_not_load_swap(tmp_path: Path) -> None:
    """delisting_short on an exchange with market_types [spot]: an error naming that key, before any
    order would be skipped as an unknown symbol."""
    cfg = config_mod.loads(
        f"""
feed: {{url: "ws://127.0.0.1:1", api_key: {KEY}}}
exchanges:
  binance: {{market_types: [spot]}}
state_dir: {tmp_path}
strategies:
  - name: delisting_short
    module: {STRATEGIES}/delisting_short.py
    params: {{exchange: binance}}
""",
        source="test.yaml",
    )
    params = {"delisting_short": vars(build(DelistingShortParams, {"exchange": "binance"}))}
    errors = [f for f in lint(cfg, params) if f.level == "error"]
    assert [f.key for f in errors] == ["exchanges.binance.market_types"]
    assert "market is swap" in errors[0].message


def test_leverage_counts_toward_the_order_cap_warning(tmp_path: Path) -> None:
    """cost 30 at 5x is a 150 USDT order: over max_order_cost 100, so check-config warns."""
    values = vars(build(DelistingShortParams, {"cost": 30, "leverage": 5}))
    cfg = config_mod.loads(
        f"""
feed: {{url: "ws://127.0.0.1:1", api_key: {KEY}}}
exchanges:
  binance: {{market_types: [spot, swap]}}
trading: {{max_order_cost: 100}}
state_dir: {tmp_path}
strategies:
  - name: delisting_short
    module: {STRATEGIES}/delisting_short.py
    params: {{cost: 30, leverage: 5}}
""",
        source="test.yaml",
    )
    warnings = lint(cfg, {"delisting_short": values})
    assert [(f.level, f.key) for f in warnings] == [("warning", "strategies[0].params.cost")]


@pytest.mark.parametrize(
    "params",
    [{"take_profit": 1.0}, {"leverage": 0}, {"stop_loss": 1.5}, {"cost": 0}, {"exit_after": 0}],
)
def test_bad_params_are_config_errors(params: dict[str, object]) -> None:
    with pytest.raises((ConfigError, ValueError)):
        build(DelistingShortParams, params)


async def test_the_time_exit_buys_back_reduce_only(tmp_path: Path) -> None:
    """An hour after the short the exit manager buys it back: a limit IOC over the ask, reduce-only; the
    resting stop is cancelled first; the venue ends flat."""
    async with FakeBinanceFutures(markets=[], perps=[("ABC", "USDT", 2.0)]) as fake:
        fake.spread = 0.0  # bid = ask = 2.0: the size below is cost / price
        rig = await make_rig(fake, tmp_path)
        try:
            strategy = DelistingShort("delisting_short", build(DelistingShortParams, {"max_slippage": None}))
            ctx = Context(
                strategy="delisting_short",
                router=rig.router,
                exchanges={"binance": rig.exchange},
                dry_run=False,
            )
            news = announcement("ABC", publisher="binance", listing_type="spot_delisting")
            await strategy.on_announcement(news, ctx.bind(news))
            assert fake.position_amount(SWAP) == -10.0  # 20 USDT at 1x, 2.0 each
            [position] = rig.journal.open_positions()
            now = [position.opened_ns]
            manager = ExitManager(
                journal=rig.journal,
                router=rig.router,
                exchanges={"binance": rig.exchange},
                prices=rig.router.prices,
                monotonic=Clock(),
                clock_ns=lambda: now[0],
            )
            await manager.check()
            assert len(fake.open_algo_orders(SWAP)) == 1
            now[0] += 3600 * 10**9
            await manager.check()
            closed = rig.journal.position(position.client_order_id)
        finally:
            await rig.close()
    buy_back = fake.orders[-1].params
    assert (buy_back["side"], buy_back["type"], buy_back["reduceOnly"]) == ("BUY", "LIMIT", "true")
    assert fake.open_algo_orders(SWAP) == [] and fake.position_amount(SWAP) == 0.0
    assert closed is not None and (closed.state, closed.side, closed.remaining) == ("closed", "sell", 0.0)
