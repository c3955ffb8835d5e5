"""The price cache's batch refresh covers every loaded market type: an account that loads spot and the
USDT perpetuals gets both kinds of quote in one fetch_quotes, on each venue (issue 12). Without it bybit
answered linear only, okx and gate spot only, and binance spot only, so every perpetual (or bybit spot)
order fetched its own price on the order path."""

from __future__ import annotations

from bridge.sim.fake_binance_futures import FakeBinanceFutures
from bridge.sim.fake_bybit import FakeBybit
from bridge.sim.fake_gate import FakeGate
from bridge.sim.fake_okx import FakeOkx
from bridge.venues import quotes
from bridge.venues.exchange import Exchange
from tests.venues.test_binanceusdm import account as binance_account
from tests.venues.test_bybit import started as bybit_started
from tests.venues.test_gate import gate_config
from tests.venues.test_okx import okx_config


def kinds(ex: Exchange, symbols: set[str]) -> set[str]:
    return {str(ex.ccxt.markets[s]["type"]) for s in symbols}


async def check(ex: Exchange, spot: str, swap: str) -> None:
    try:
        quotes = await ex.fetch_quotes()
        assert {spot, swap} <= set(quotes), sorted(quotes)
        assert kinds(ex, set(quotes)) == {"spot", "swap"}
        for symbol in (spot, swap):
            q = quotes[symbol]
            assert q.buy_reference is not None and q.sell_reference is not None
        one = await ex.fetch_quote(swap)
        assert one is not None and one.symbol == swap and one.buy_reference is not None
    finally:
        await ex.close()


async def test_binance_spot_and_usdm_books() -> None:
    async with FakeBinanceFutures(markets=[("ABC", "USDT", 2.0)], perps=[("ABC", "USDT", 2.0)]) as fake:
        ex = binance_account(fake)
        await ex.start(check_keys=False)
        await check(ex, "ABC/USDT", "ABC/USDT:USDT")
        assert any("/fapi/v1/ticker/bookTicker" in str(r) for r in fake.requests)  # the cheap book


async def test_bybit_spot_and_linear() -> None:
    async with FakeBybit(markets=[("BTC", "USDT", 60_000.0)]) as fake:
        await check(await bybit_started(fake), "BTC/USDT", "BTC/USDT:USDT")


async def test_okx_spot_and_swap() -> None:
    async with FakeOkx() as fake:
        ex = Exchange("okx", okx_config(fake), dry_run=False, keep_warm_s=0)
        await ex.start(check_keys=False)
        await check(ex, "BTC/USDT", "BTC/USDT:USDT")


async def test_gate_spot_and_futures() -> None:
    async with FakeGate() as fake:
        ex = Exchange("gate", gate_config(fake, swap=True), dry_run=False)
        await ex.start(check_keys=False)
        await check(ex, "BTC/USDT", "BTC/USDT:USDT")


async def same_as_ccxt(ex: Exchange) -> int:
    """The batch refresh reads bybit's, okx's and gate's raw ticker lists itself (quotes.RAW_TICKERS):
    for every loaded market of both kinds it must give what ccxt's fetch_tickers parses from the same
    endpoints. Returns how many quotes were compared."""
    cc = ex.ccxt
    try:
        ours = {s: (q.bid, q.ask, q.last) for s, q in (await quotes.fetch_all(cc)).items()}
        theirs = {}
        for kind in ("spot", "swap"):
            for symbol, ticker in (await cc.fetch_tickers(None, {"type": kind})).items():
                q = quotes._from_ticker(symbol, ticker, 0)
                if q is not None and symbol in cc.markets:
                    theirs[symbol] = (q.bid, q.ask, q.last)
        assert ours == theirs
        return len(ours)
    finally:
        await ex.close()


async def test_bybit_raw_tickers_read_as_ccxt_parses_them_across_chunks() -> None:
    many = [(f"C{i:03d}", "USDT", 1.0 + i / 100) for i in range(2 * quotes.BOOK_CHUNK + 10)]
    async with FakeBybit(markets=[("BTC", "USDT", 60_000.0), *many]) as fake:
        assert await same_as_ccxt(await bybit_started(fake)) > 2 * quotes.BOOK_CHUNK


async def test_okx_raw_tickers_read_as_ccxt_parses_them() -> None:
    async with FakeOkx() as fake:
        ex = Exchange("okx", okx_config(fake), dry_run=False, keep_warm_s=0)
        await ex.start(check_keys=False)
        assert await same_as_ccxt(ex) >= 2


async def test_gate_raw_tickers_read_as_ccxt_parses_them() -> None:
    async with FakeGate() as fake:
        ex = Exchange("gate", gate_config(fake, swap=True), dry_run=False)
        await ex.start(check_keys=False)
        assert await same_as_ccxt(ex) >= 2
