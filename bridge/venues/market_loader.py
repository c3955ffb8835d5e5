"""The market worker's child process (`python -m bridge.venues.market_loader`): loads and parses every
market of an exchange with its own ccxt instance, off the daemon's event loop, and streams ccxt's maps
back in small frames. It gets the public config only (no keys) and exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from bridge.config import ExchangeConfig

# ccxt (about a second of CPU to import) is imported by the child once it has lowered its priority,
# not at the top: the daemon imports this module too, for LoadRequest and the frame format.

# A frame is a 4-byte big-endian length, then a pickle of a tuple whose first item names its kind:
#   ("markets", [market, ...])                     ccxt's unified markets, in ccxt's own order
#   ("currencies", name, [(code, currency), ...])  name: currencies, baseCurrencies or quoteCurrencies
#   ("done", {"options": {...}, "cost": float, "elapsed_ms": float})
#   ("error", error class name, message)           the load failed; the worker lives on
# Frames stay small so the daemon unpickles each in about a millisecond and lets its loop run between.
FRAME_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
MARKETS_PER_FRAME = 25
CURRENCIES_PER_FRAME = 200
CURRENCY_MAPS = ("currencies", "baseCurrencies", "quoteCurrencies")
WORKER_NICENESS = 10


@dataclass(frozen=True)
class LoadRequest:
    """What the child needs to build the same ccxt instance as the daemon's, minus the keys: the
    exchange id and the public part of its config (`ccxt`: the constructor config, credentials removed)."""

    exchange_id: str
    market_types: tuple[str, ...]
    sandbox: bool
    ccxt: dict[str, Any] = field(default_factory=dict)


def encode(message: object) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(payload)) + payload


def read_frame(stream: IO[bytes]) -> Any:
    """The next message from a blocking stream; None at end of stream."""
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (size,) = FRAME_HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    # the daemon that started this process is the only writer of its stdin
    return pickle.loads(payload)  # noqa: S301


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class Loader:
    """The child's state: one ccxt instance per exchange, kept between loads (building one is not free)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._instances: dict[str, tuple[LoadRequest, Any]] = {}

    async def load(self, request: LoadRequest) -> None:
        from bridge.venues.errors import translated  # here, not at the top: see the note on imports

        began = time.perf_counter()
        try:
            ex = await self._instance(request)
            ex.bridge_cost = 0.0
            with translated(request.exchange_id, "read"):
                await ex.load_markets(True)
        except Exception as exc:  # noqa: BLE001 - every failure is an answer; the daemon decides
            self._send(("error", type(exc).__name__, str(exc)))
            return
        for chunk in _chunks(list(ex.markets.values()), MARKETS_PER_FRAME):
            self._send(("markets", chunk))
        for name in CURRENCY_MAPS:
            for items in _chunks(list((getattr(ex, name, None) or {}).items()), CURRENCIES_PER_FRAME):
                self._send(("currencies", name, items))
        helpers = ex.options.get("marketHelperProps") or []
        options = {name: ex.options[name] for name in helpers if name in ex.options}
        elapsed_ms = round((time.perf_counter() - began) * 1000, 1)
        self._send(("done", {"options": options, "cost": ex.bridge_cost, "elapsed_ms": elapsed_ms}))

    async def close(self) -> None:
        instances, self._instances = self._instances, {}
        for _, ex in instances.values():
            await ex.close()

    async def _instance(self, request: LoadRequest) -> Any:
        known = self._instances.get(request.exchange_id)
        if known is not None and known[0] == request:
            return known[1]
        if known is not None:
            await known[1].close()
        import ccxt.async_support as ccxt_async  # here, not at the top: see the note on imports

        from bridge.venues.ccxt_client import ccxt_config, limit_market_loading

        cfg = ExchangeConfig(market_types=request.market_types, sandbox=request.sandbox, ccxt=request.ccxt)
        ex = _counting(getattr(ccxt_async, request.exchange_id))(ccxt_config(cfg, dry_run=True))
        limit_market_loading(ex, cfg)
        if request.sandbox:
            ex.set_sandbox_mode(True)
        self._instances[request.exchange_id] = (request, ex)
        return ex

    def _send(self, message: tuple[Any, ...]) -> None:
        self._out.write(encode(message))
        self._out.flush()


def _counting(cls: Any) -> Any:
    """The ccxt class with a throttle that only adds up request costs: the daemon's own request budget
    is charged with them (it keeps the venue's limits), so nothing waits here."""

    async def throttle(self: Any, cost: Any = None) -> None:
        self.bridge_cost += float((self.tokenBucket or {}).get("cost", 1) if cost is None else cost)

    return type(cls.__name__, (cls,), {"throttle": throttle})


def main() -> int:
    # The protocol gets its own copy of stdout; fd 1 then points at stderr, so a stray print (ccxt's
    # verbose mode, a library warning) can never corrupt a frame.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # Parsing is the daemon's background chore: on a busy machine its event loop gets the CPU first.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    loop = asyncio.new_event_loop()
    loader = Loader(out)
    try:
        while True:
            request = read_frame(sys.stdin.buffer)
            if not isinstance(request, LoadRequest):  # end of stdin: the daemon is done with us
                return 0
            loop.run_until_complete(loader.load(request))
    except BrokenPipeError:  # the daemon went away mid-answer
        return 0
    finally:
        loop.run_until_complete(loader.close())
        loop.close()


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: the requests unpickle as instances of
    # bridge.venues.market_loader.LoadRequest, which is not __main__.LoadRequest.
    from bridge.venues.market_loader import main as module_main

    sys.exit(module_main())
