"""Best bid/ask quotes from a venue's ccxt instance, as `Quote`s stamped with time.time_ns() at receipt.

Binance spot (request weight out of 6,000 per minute, per Binance's REST docs for
GET /api/v3/ticker/bookTicker; ccxt's throttle is charged the same through its cost table):
- every symbol: bookTicker without `symbol`, weight 4 (ccxt cost 0.8);
- one symbol: bookTicker?symbol=, weight 2 (ccxt cost 0.4). ccxt's fetch_bids_asks([symbol]) would send
  `symbols=[...]`, which costs 4, so the endpoint is called directly.
The all-symbol answer (~3,000 entries) is read here rather than by ccxt's parse_tickers: measured 2 ms
against ccxt's 32 ms of blocked event loop on this machine, every refresh. Binance USD-M perpetuals:
GET /fapi/v1/ticker/bookTicker, weight 5 for every symbol, 2 for one.

Bybit, OKX and Gate: the all-instrument ticker endpoint ccxt's fetch_tickers calls for the type (the
same request, so the same cost to the budget), once per loaded market type (without the type they
answer only their default one), read here in chunks for bid, ask and last (`RAW_TICKERS`): ccxt's
parse_ticker held the loop ~20-30 us a ticker in one step, 5-13 ms a refresh in the stress run. Other
venues and other types: ccxt's fetch_tickers; one symbol: fetch_ticker.

ccxt's exceptions pass through; the adapter translates them.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import ccxt.async_support as ccxt_async

from bridge.venues.types import Quote


async def fetch_all(ex: Any) -> dict[str, Quote]:
    """Every loaded market's quote: one request per loaded market type (spot, and the USDT perpetuals
    when `market_types` loads swap), concurrently. Markets the venue gives no price for (an empty book
    before trading starts shows zeros) and symbols not in ccxt's markets are left out."""
    markets = ex.markets or {}
    loaded = sorted({str(m["type"]) for m in markets.values() if m.get("type") in ("spot", "swap")})
    kinds: list[str | None] = [*loaded] if loaded else [None]  # None: the venue's default type
    answers = await asyncio.gather(*(_fetch_kind(ex, kind) for kind in kinds))
    quotes: dict[str, Quote] = {}
    for found in answers:
        quotes.update(found)
    return quotes


async def _fetch_kind(ex: Any, kind: str | None) -> dict[str, Quote]:
    """The quotes of one market type (None: the venue's default one). Binance: the all-symbol bookTicker of spot (weight 4) or of
    USD-M futures (GET /fapi/v1/ticker/bookTicker, weight 5); elsewhere ccxt's fetch_tickers for that
    type (bybit, okx and gate otherwise answer their default type only)."""
    if isinstance(ex, ccxt_async.binance) and (kind == "swap" or _binance_spot_book(ex)):
        call = ex.fapiPublicGetTickerBookTicker if kind == "swap" else ex.publicGetTickerBookTicker
        entries = await call()
        ts_ns = time.time_ns()
        listed = entries if isinstance(entries, list) else [entries]
        return await _read_book_tickers(ex, listed, ts_ns, swap=kind == "swap")
    if kind is not None and (raw := _raw_tickers(ex, kind)) is not None:
        answer = await getattr(ex, raw.call)(dict(raw.params))
        ts_ns = time.time_ns()
        for step in raw.path:
            answer = answer.get(step) if isinstance(answer, dict) else None
        listed = answer if isinstance(answer, list) else []
        return await _read_entries(listed, _book_symbols(ex, swap=kind == "swap"), ts_ns, raw.fields)
    if isinstance(ex, ccxt_async.binance):  # another default market type: ccxt picks its endpoint
        tickers = await ex.fetch_bids_asks()
    else:
        tickers = await (ex.fetch_tickers() if kind is None else ex.fetch_tickers(None, {"type": kind}))
    ts_ns = time.time_ns()
    markets = ex.markets or {}
    quotes: dict[str, Quote] = {}
    for symbol, ticker in tickers.items():
        quote = _from_ticker(symbol, ticker, ts_ns)
        if quote is not None and symbol in markets:
            quotes[symbol] = quote
    return quotes


async def fetch_one(ex: Any, symbol: str) -> Quote | None:
    """One loaded market's quote; None if the venue gives no price for it or no longer lists it."""
    market = ex.markets[symbol]
    try:
        if isinstance(ex, ccxt_async.binance) and market.get("spot") and not market.get("stock"):
            entry = await ex.publicGetTickerBookTicker({"symbol": market["id"]})
            return _entry_quote(symbol, entry, time.time_ns(), BINANCE_BOOK)
        if isinstance(ex, ccxt_async.binance) and market.get("swap") and market.get("linear"):
            entry = await ex.fapiPublicGetTickerBookTicker({"symbol": market["id"]})  # weight 2
            return _entry_quote(symbol, entry, time.time_ns(), BINANCE_BOOK)
        ticker = await ex.fetch_ticker(symbol)
    except ccxt_async.BadSymbol:  # binance -1121: not (or no longer) listed
        return None
    return _from_ticker(symbol, ticker, time.time_ns())


def _binance_spot_book(ex: Any) -> bool:
    """Binance (or a subclass) whose default market type, the one ccxt's fetch_bids_asks would ask
    for, is spot: GET /api/v3/ticker/bookTicker."""
    if not isinstance(ex, ccxt_async.binance):
        return False
    market_type, _ = ex.handle_market_type_and_params("fetchBidsAsks", None, {})
    return bool(market_type == "spot")


# Ticker entries handled between two yields to the event loop: under 1 ms of work at a time, so an
# all-symbol answer (~3,000 entries) never holds the loop (and an announcement) for long.
BOOK_CHUNK = 250


# A ticker entry's fields: venue id, bid, ask, and last (None: the entry has no last price).
Fields = tuple[str, str, str, str | None]
BINANCE_BOOK: Fields = ("symbol", "bidPrice", "askPrice", None)  # spot and USD-M bookTicker entries


@dataclass(frozen=True)
class RawTickers:
    """One venue's all-instrument ticker request for one market type, as ccxt's fetch_tickers sends
    it (`call`: ccxt's implicit method, `params`), where the list is in the answer (`path`), and the
    entry's fields (`fields`: venue id, bid, ask, last), the ones ccxt's parse_ticker reads."""

    call: str
    params: dict[str, str]
    path: tuple[str, ...]
    fields: Fields


# Where the list is in the answer, and the fields ccxt's parse_ticker reads, per venue
_BYBIT: tuple[tuple[str, ...], Fields] = (
    ("result", "list"),
    ("symbol", "bid1Price", "ask1Price", "lastPrice"),
)
_OKX: tuple[tuple[str, ...], Fields] = (("data",), ("instId", "bidPx", "askPx", "last"))

# (ccxt class, market type) -> the request; ccxt 4.5's bybit.py, okx.py and gate.py fetch_tickers.
RAW_TICKERS: dict[tuple[type[Any], str], RawTickers] = {
    (ccxt_async.bybit, "spot"): RawTickers("publicGetV5MarketTickers", {"category": "spot"}, *_BYBIT),
    (ccxt_async.bybit, "swap"): RawTickers("publicGetV5MarketTickers", {"category": "linear"}, *_BYBIT),
    (ccxt_async.okx, "spot"): RawTickers("publicGetMarketTickers", {"instType": "SPOT"}, *_OKX),
    (ccxt_async.okx, "swap"): RawTickers("publicGetMarketTickers", {"instType": "SWAP"}, *_OKX),
    (ccxt_async.gate, "spot"): RawTickers(
        "publicSpotGetTickers",
        {"timezone": "utc0"},
        (),
        ("currency_pair", "highest_bid", "lowest_ask", "last"),
    ),
    (ccxt_async.gate, "swap"): RawTickers(
        "publicFuturesGetSettleTickers",
        {"settle": "usdt", "timezone": "utc0"},
        (),
        ("contract", "highest_bid", "lowest_ask", "last"),
    ),
}


def _raw_tickers(ex: Any, kind: str) -> RawTickers | None:
    for (cls, of_kind), raw in RAW_TICKERS.items():
        if of_kind == kind and isinstance(ex, cls):
            return raw
    return None


async def _read_book_tickers(
    ex: Any, entries: list[dict[str, Any]], ts_ns: int, *, swap: bool = False
) -> dict[str, Quote]:
    """Binance bookTicker entries as quotes of the spot markets, or with `swap` of the USD-M
    perpetuals (both kinds share the id `BTCUSDT`)."""
    return await _read_entries(entries, _book_symbols(ex, swap=swap), ts_ns, BINANCE_BOOK)


async def _read_entries(
    entries: list[Any], symbols: dict[str, str], ts_ns: int, fields: Fields
) -> dict[str, Quote]:
    """Ticker entries (dicts with the venue id, bid, ask and maybe last under `fields`) as quotes of
    the markets in `symbols` (venue id -> unified symbol), a chunk at a time (BOOK_CHUNK)."""
    quotes: dict[str, Quote] = {}
    for start in range(0, len(entries), BOOK_CHUNK):
        for entry in entries[start : start + BOOK_CHUNK]:
            venue_id = entry.get(fields[0]) if isinstance(entry, dict) else None
            symbol = symbols.get(venue_id) if isinstance(venue_id, str) else None
            if symbol is not None and (quote := _entry_quote(symbol, entry, ts_ns, fields)) is not None:
                quotes[symbol] = quote
        if start + BOOK_CHUNK < len(entries):
            await asyncio.sleep(0)
    return quotes


def _book_symbols(ex: Any, *, swap: bool) -> dict[str, str]:
    """Venue id -> unified symbol of the spot markets (or the linear perpetuals: on binance, bybit and
    gate both kinds share ids such as `BTCUSDT`), rebuilt only when
    ccxt's market map is replaced or grows (a reload, a targeted refresh)."""
    by_id: dict[str, list[dict[str, Any]]] = ex.markets_by_id or {}
    cache: dict[bool, tuple[Any, int, dict[str, str]]] = ex.__dict__.setdefault("_bridge_book_symbols", {})
    cached = cache.get(swap)
    if cached is not None and cached[0] is by_id and cached[1] == len(by_id):
        return cached[2]
    symbols: dict[str, str] = {}
    for market_id, markets in by_id.items():
        for market in markets:
            if (market.get("swap") and market.get("linear")) if swap else market.get("spot"):
                symbols[market_id] = market["symbol"]
                break
    cache[swap] = (by_id, len(by_id), symbols)  # the map itself, not its id(): ids are reused
    return symbols


def _entry_quote(symbol: str, entry: dict[str, Any], ts_ns: int, fields: Fields) -> Quote | None:
    """A venue's raw ticker entry as a quote (None: it gives no price at all)."""
    _, bid_key, ask_key, last_key = fields
    bid, ask = _positive(entry.get(bid_key)), _positive(entry.get(ask_key))
    last = None if last_key is None else _positive(entry.get(last_key))
    return None if bid is None and ask is None and last is None else Quote(symbol, bid, ask, last, ts_ns)


def _from_ticker(symbol: str, ticker: dict[str, Any], ts_ns: int) -> Quote | None:
    bid, ask = _positive(ticker.get("bid")), _positive(ticker.get("ask"))
    last = _positive(ticker.get("last")) or _positive(ticker.get("close"))
    return None if bid is None and ask is None and last is None else Quote(symbol, bid, ask, last, ts_ns)


def _positive(value: Any) -> float | None:
    """A positive, finite price from a venue's number or string; None otherwise (also in the
    3,000-entry book loop: one float() and one comparison)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 < number < math.inf else None
