"""The latency floor on several venues at once: the least a Python client can do between a feed frame and
one order request per venue (bench/venues.py, bench/stress.py).

Reads the feed over the same aiohttp WebSocket stack as the daemon, decodes each announcement and at
once sends, for each ticker, one signed spot market buy per venue over kept-alive HTTP connections, each
in the venue's own request format and signature: Binance (HMAC-SHA256 of the query string, sent in the
query), Bybit v5 (X-BAPI-* headers, HMAC-SHA256 of timestamp + key + recv window + JSON body), OKX v5
(OK-ACCESS-* headers with the passphrase, base64 HMAC-SHA256 of timestamp + method + path + JSON body)
and Gate APIv4 (KEY / Timestamp / SIGN headers, hex HMAC-SHA512 of method, path, query, the body's
SHA-512 and timestamp). The venues' orders go out together, in the order given, as the daemon's
strategies send theirs. No ccxt, journal, gate, risk checks or logging.

    floor_venues.py --ws URL --feed-key KEY --venues '[{"venue": "bybit", "url": ..., "api_key": ...,
                     "secret": ..., "passphrase": null}, ...]'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson

RECV_WINDOW_MS = "5000"
JSON = "application/json"


@dataclass(frozen=True)
class VenueSpec:
    """Where one venue's fake is and the account's credentials."""

    venue: str  # binance | bybit | okx | gate
    url: str  # the fake's base URL, e.g. http://127.0.0.1:41234
    api_key: str
    secret: str
    passphrase: str | None = None  # OKX only


@dataclass(frozen=True)
class Request:
    """One signed order request, ready to send: POST url with headers and body (None: no body)."""

    url: str
    headers: dict[str, str]
    body: bytes | None


def hmac_hex(secret: str, payload: str, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), payload.encode(), digest).hexdigest()


def binance_order(spec: VenueSpec, ticker: str, cost: str, client_id: str, now_ms: int) -> Request:
    """Binance spot: the signed parameters in the query string, no body (as the daemon's fast path)."""
    query = (
        f"symbol={ticker}USDT&side=BUY&type=MARKET&quoteOrderQty={cost}"
        f"&newClientOrderId={client_id}&timestamp={now_ms}"
    )
    signature = hmac_hex(spec.secret, query)
    url = f"{spec.url}/api/v3/order?{query}&signature={signature}"
    return Request(url, {"X-MBX-APIKEY": spec.api_key}, None)


def bybit_order(spec: VenueSpec, ticker: str, cost: str, client_id: str, now_ms: int) -> Request:
    """Bybit v5 spot market buy for `cost` quote (marketUnit quoteCoin); the signature covers the body."""
    body = orjson.dumps(
        {
            "category": "spot",
            "symbol": f"{ticker}USDT",
            "side": "Buy",
            "orderType": "Market",
            "qty": cost,
            "marketUnit": "quoteCoin",
            "orderLinkId": client_id,
        }
    )
    stamp = str(now_ms)
    headers = {
        "X-BAPI-API-KEY": spec.api_key,
        "X-BAPI-TIMESTAMP": stamp,
        "X-BAPI-RECV-WINDOW": RECV_WINDOW_MS,
        "X-BAPI-SIGN": hmac_hex(spec.secret, stamp + spec.api_key + RECV_WINDOW_MS + body.decode()),
        "Content-Type": JSON,
    }
    return Request(f"{spec.url}/v5/order/create", headers, body)


def okx_order(spec: VenueSpec, ticker: str, cost: str, client_id: str, now_ms: int) -> Request:
    """OKX v5 spot market buy spending `cost` quote (tgtCcy quote_ccy); ISO 8601 timestamp, base64 sign."""
    path = "/api/v5/trade/order"
    body = orjson.dumps(
        {
            "instId": f"{ticker}-USDT",
            "tdMode": "cash",
            "side": "buy",
            "ordType": "market",
            "sz": cost,
            "tgtCcy": "quote_ccy",
            "clOrdId": client_id,
        }
    )
    stamp = (
        datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now_ms % 1000:03d}Z"
    )
    digest = hmac.new(spec.secret.encode(), (stamp + "POST" + path).encode() + body, hashlib.sha256).digest()
    headers = {
        "OK-ACCESS-KEY": spec.api_key,
        "OK-ACCESS-PASSPHRASE": spec.passphrase or "",
        "OK-ACCESS-TIMESTAMP": stamp,
        "OK-ACCESS-SIGN": base64.b64encode(digest).decode(),
        "Content-Type": JSON,
    }
    return Request(spec.url + path, headers, body)


def gate_order(spec: VenueSpec, ticker: str, cost: str, client_id: str, now_ms: int) -> Request:
    """Gate APIv4 spot market buy for `cost` quote (a market buy's amount is the quote to spend, IOC);
    the client id is `text`, which must start with "t-"."""
    path = "/api/v4/spot/orders"
    body = orjson.dumps(
        {
            "currency_pair": f"{ticker}_USDT",
            "side": "buy",
            "type": "market",
            "amount": cost,
            "time_in_force": "ioc",
            "text": f"t-{client_id}",
        }
    )
    stamp = str(now_ms // 1000)
    payload = "\n".join(("POST", path, "", hashlib.sha512(body).hexdigest(), stamp))
    headers = {
        "KEY": spec.api_key,
        "Timestamp": stamp,
        "SIGN": hmac_hex(spec.secret, payload, "sha512"),
        "Content-Type": JSON,
    }
    return Request(spec.url + path, headers, body)


BUILDERS: dict[str, Callable[[VenueSpec, str, str, str, int], Request]] = {
    "binance": binance_order,
    "bybit": bybit_order,
    "okx": okx_order,
    "gate": gate_order,
}
PINGS = {  # an unsigned GET per venue to warm the connection pool
    "binance": "/api/v3/ping",
    "bybit": "/v5/market/time",
    "okx": "/api/v5/public/time",
    "gate": "/api/v4/spot/time",
}


async def run(ws_url: str, feed_key: str, venues: list[VenueSpec], cost: str) -> None:
    # One long keep-alive per venue: the benchmark spaces announcements, and a closed idle connection
    # would measure a TCP connect instead of the request.
    ids = itertools.count(1)
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=3600)) for _ in venues]
    try:

        async def send(http: aiohttp.ClientSession, spec: VenueSpec, ticker: str) -> None:
            request = BUILDERS[spec.venue](
                spec, ticker, cost, f"floor{next(ids)}", time.time_ns() // 1_000_000
            )
            async with http.post(request.url, headers=request.headers, data=request.body) as resp:
                await resp.read()

        for _ in range(2):  # warm each pool with a few connections, as the daemon's keep-warm does
            await asyncio.gather(
                *(
                    _get(http, spec.url + PINGS[spec.venue])
                    for http, spec in zip(sessions, venues, strict=True)
                )
            )
        async with (
            aiohttp.ClientSession() as feed,
            feed.ws_connect(ws_url, headers={"X-API-Key": feed_key}, autoping=True) as ws,
        ):
            while True:
                msg = await ws.receive()
                if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    return
                obj = orjson.loads(msg.data)
                if obj.get("type") != "announcement":
                    continue
                tickers = [t.strip().upper() for t in obj["ticker"].split(",") if t.strip()]
                sends: list[Awaitable[None]] = [
                    send(http, spec, t) for t in tickers for http, spec in zip(sessions, venues, strict=True)
                ]
                if len(sends) == 1:
                    await sends[0]
                else:
                    await asyncio.gather(*sends)
    finally:
        for http in sessions:
            await http.close()


async def _get(http: aiohttp.ClientSession, url: str) -> None:
    async with http.get(url) as resp:
        await resp.read()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ws", required=True)
    p.add_argument("--feed-key", required=True)
    p.add_argument("--venues", required=True, help="JSON list of {venue, url, api_key, secret, passphrase}")
    p.add_argument("--cost", default="20")
    a = p.parse_args()
    venues = [VenueSpec(**item) for item in orjson.loads(a.venues)]
    unknown = [v.venue for v in venues if v.venue not in BUILDERS]
    if unknown:
        p.error(f"unknown venue(s): {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
    asyncio.run(run(a.ws, a.feed_key, venues, a.cost))


if __name__ == "__main__":
    main()
