"""Quotes from bridge.venues: every symbol's best bid/ask in one request, one symbol on its own, what each
costs in request budget, against FakeBinance over 127.0.0.1 with real ccxt code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.config import ExchangeConfig
from bridge.errors import ExchangeUnavailable
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.venues import quotes
from bridge.venues.exchange import Exchange

BOOK_TICKER = ("GET", "/api/v3/ticker/bookTicker")


class FrozenClock:
    """A monotonic clock that never moves: the request budget never refills during a test."""

    def __call__(self) -> float:
        return 1000.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance() as server:
        server.add_market("PRE", "USDT", price=1.0, status="BREAK")  # listed, not trading yet
        yield server


@pytest.fixture
async def exchange(fake: FakeBinance) -> AsyncIterator[Exchange]:
    cfg = ExchangeConfig(
        api_key=Secret(fake.api_key),
        secret=Secret(fake.secret),
        ccxt={**fake.ccxt_config(), "timeout_on_exit": 0},
    )
    ex = Exchange("binance", cfg, dry_run=False, clock=FrozenClock())
    await ex.start(check_keys=False)
    fake.requests.clear()
    fake.queries.clear()
    yield ex
    await ex.close()


async def test_fetch_quotes_reads_every_symbol_in_one_request(exchange: Exchange, fake: FakeBinance) -> None:
    """fetch_quotes is one GET ticker/bookTicker without a symbol (Binance weight 4): every trading
    market's bid below and ask above its price, no last trade (the book ticker has none), stamped
    with the wall clock at receipt; a market with an empty book (zeros) is left out."""
    before = time.time_ns()
    found = await exchange.fetch_quotes()
    after = time.time_ns()
    assert fake.requests == [BOOK_TICKER] and fake.queries == [(*BOOK_TICKER, {})]
    assert set(found) == {"BTC/USDT", "ETH/USDT", "BNB/USDT", "ETH/BTC"}
    btc = found["BTC/USDT"]
    assert (btc.bid, btc.ask, btc.last) == (59_970.0, 60_030.0, None)  # the fake's 0.1 % spread
    assert btc.buy_reference == 60_030.0 and btc.sell_reference == 59_970.0
    assert all(before <= q.ts_ns <= after for q in found.values())
    fake.set_price("ETH/USDT", 3100.0)
    assert (await exchange.fetch_quotes())["ETH/USDT"].ask == pytest.approx(3101.55)


async def test_fetch_quote_asks_for_one_symbol(exchange: Exchange, fake: FakeBinance) -> None:
    """fetch_quote is one GET ticker/bookTicker?symbol= (Binance weight 2, not `symbols=`, which costs
    4); it follows the price; a market with an empty book and a market not loaded give None, the
    latter without a request."""
    quote = await exchange.fetch_quote("ETH/BTC")
    assert quote is not None and quote.symbol == "ETH/BTC"
    assert quote.bid is not None and quote.ask is not None and quote.bid < 0.05 < quote.ask
    assert fake.queries == [(*BOOK_TICKER, {"symbol": "ETHBTC"})]
    fake.set_price("ETH/BTC", 0.06)
    moved = await exchange.fetch_quote("ETH/BTC")
    assert moved is not None and moved.bid is not None and moved.bid > 0.0599
    assert await exchange.fetch_quote("PRE/USDT") is None
    assert await exchange.fetch_quote("NOPE/USDT") is None
    assert fake.count(*BOOK_TICKER) == 3


async def test_quotes_are_charged_to_the_request_budget(exchange: Exchange) -> None:
    """Both go through ccxt's request path and so through the account's budget, at Binance's weights
    in ccxt's units of 5: all symbols 0.8 (weight 4), one symbol 0.4 (weight 2)."""
    budget = exchange.budget
    assert budget is not None
    before = budget.available
    await exchange.fetch_quotes()
    assert budget.available == pytest.approx(before - 0.8)
    await exchange.fetch_quote("BTC/USDT")
    assert budget.available == pytest.approx(before - 1.2)


async def test_failed_quote_requests_raise_translated_errors(exchange: Exchange, fake: FakeBinance) -> None:
    """A venue that cannot be reached raises ExchangeUnavailable (no ccxt type as cause, no query
    string in the message), so a price cache can back off; it never passes for "no quotes"."""
    await fake.stop()
    with pytest.raises(ExchangeUnavailable) as caught:
        await exchange.fetch_quotes()
    assert caught.value.__cause__ is None and caught.value.exchange == "binance"
    with pytest.raises(ExchangeUnavailable) as caught:
        await exchange.fetch_quote("BTC/USDT")
    assert "symbol=" not in str(caught.value)


class TickersOnly:
    """A ccxt instance of a venue without a book ticker: only fetch_tickers and fetch_ticker."""

    def __init__(self) -> None:
        self.markets: dict[str, Any] = {"ABC/USDT": {}, "DEF/USDT": {}, "GHI/USDT": {}}

    async def fetch_tickers(self, symbols: Any = None, params: Any = None) -> dict[str, Any]:
        return {
            "ABC/USDT": {"bid": 1.0, "ask": 1.1, "last": 1.05},
            "DEF/USDT": {"bid": 0, "ask": None, "last": None, "close": 2.0},  # no book, a close
            "GHI/USDT": {"bid": None, "ask": None, "last": None},  # nothing at all
            "OTHER/USDT": {"bid": 5.0, "ask": 5.1, "last": 5.0},  # not a loaded market
        }

    async def fetch_ticker(self, symbol: str) -> dict[str, Any]:
        return (await self.fetch_tickers())[symbol]


async def test_other_venues_read_bid_ask_and_last_from_tickers() -> None:
    """Elsewhere the quotes come from ccxt's tickers: bid, ask and last (else close), a zero read as
    missing, a ticker with no price at all and a symbol not among the markets left out."""
    venue = TickersOnly()
    found = await quotes.fetch_all(venue)
    assert set(found) == {"ABC/USDT", "DEF/USDT"}
    abc, def_ = found["ABC/USDT"], found["DEF/USDT"]
    assert (abc.bid, abc.ask, abc.last) == (1.0, 1.1, 1.05)
    assert (def_.bid, def_.ask, def_.last, def_.buy_reference) == (None, None, 2.0, 2.0)
    one = await quotes.fetch_one(venue, "ABC/USDT")
    assert one is not None and one.buy_reference == 1.1 and one.sell_reference == 1.0
    assert await quotes.fetch_one(venue, "GHI/USDT") is None


class BookOnly:
    """Just what the book reader reads of a ccxt binance: its markets by id."""

    def __init__(self, count: int) -> None:
        self.markets_by_id: dict[str, list[dict[str, Any]]] = {
            f"C{i}USDT": [{"symbol": f"C{i}/USDT", "spot": True}] for i in range(count)
        }


async def test_the_all_symbol_book_is_read_a_chunk_at_a_time() -> None:
    """3,000 entries never hold the loop in one go: another task runs between chunks (issue 15), and
    every entry is still read."""
    venue = BookOnly(3000)
    entries = [{"symbol": f"C{i}USDT", "bidPrice": "1.0", "askPrice": "1.1"} for i in range(3000)]
    ran_during: list[int] = []
    reading = asyncio.ensure_future(quotes._read_book_tickers(venue, entries, 1))

    async def other() -> None:
        while not reading.done():
            ran_during.append(1)
            await asyncio.sleep(0)

    found, _ = await asyncio.gather(reading, other())
    assert len(found) == 3000
    assert len(ran_during) >= 3000 // quotes.BOOK_CHUNK - 1


async def test_a_market_added_by_a_refresh_is_read_from_the_next_book() -> None:
    """The id -> symbol map is cached, but a new market map (a reload or a targeted refresh) is seen."""
    venue = BookOnly(2)
    entries = [{"symbol": "NEWUSDT", "bidPrice": "2.0", "askPrice": "2.1"}]
    assert await quotes._read_book_tickers(venue, entries, 1) == {}
    venue.markets_by_id = {**venue.markets_by_id, "NEWUSDT": [{"symbol": "NEW/USDT", "spot": True}]}
    assert set(await quotes._read_book_tickers(venue, entries, 1)) == {"NEW/USDT"}
