"""The latency floor: the least a Python client can do between a feed frame and an order request.

Reads the feed over the same aiohttp WebSocket stack as the daemon, decodes each announcement and at
once POSTs one signed Binance market order per ticker over a kept-alive HTTP connection. No ccxt, no
journal, no gate, no risk checks, no logging. Run by bench/latency.py as its own process, like the
daemon, so both sides pay the same process and socket hops. The signed parameters go in the query
string, as the daemon sends them: with a body, aiohttp on Python 3.11 writes the request one loop
step later, from a task.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import time

import aiohttp
import orjson


async def run(ws_url: str, feed_key: str, rest_url: str, api_key: str, secret: bytes, cost: str) -> None:
    # One long keep-alive: the benchmark spaces announcements, and a closed idle connection would
    # measure a TCP connect instead of the request.
    connector = aiohttp.TCPConnector(keepalive_timeout=3600)
    order_url = rest_url + "/api/v3/order"
    headers = {"X-MBX-APIKEY": api_key}
    ids = itertools.count(1)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(ticker: str) -> None:
            query = (
                f"symbol={ticker}USDT&side=BUY&type=MARKET&quoteOrderQty={cost}"
                f"&newClientOrderId=floor{next(ids)}&timestamp={time.time_ns() // 1_000_000}"
            )
            signature = hmac.new(secret, query.encode(), hashlib.sha256).hexdigest()
            async with http.post(f"{order_url}?{query}&signature={signature}", headers=headers) as resp:
                await resp.read()

        # Warm the pool with a few connections, as the daemon's keep-warm does.
        for _ in range(2):
            await asyncio.gather(*(_get(http, rest_url + "/api/v3/ping") for _ in range(4)))
        async with http.ws_connect(ws_url, headers={"X-API-Key": feed_key}, autoping=True) as ws:
            while True:
                msg = await ws.receive()
                if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    return
                obj = orjson.loads(msg.data)
                if obj.get("type") != "announcement":
                    continue
                tickers = [t.strip().upper() for t in obj["ticker"].split(",") if t.strip()]
                if len(tickers) == 1:
                    await post(tickers[0])
                else:
                    await asyncio.gather(*(post(t) for t in tickers))


async def _get(http: aiohttp.ClientSession, url: str) -> None:
    async with http.get(url) as resp:
        await resp.read()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ws", required=True)
    p.add_argument("--feed-key", required=True)
    p.add_argument("--rest", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--cost", default="20")
    a = p.parse_args()
    asyncio.run(run(a.ws, a.feed_key, a.rest, a.api_key, a.secret.encode(), a.cost))


if __name__ == "__main__":
    main()
