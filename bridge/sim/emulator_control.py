"""A running emulator's control endpoint: small JSON-over-HTTP on 127.0.0.1, so announcements and
faults can come from another terminal (`bridge emulator-send`) or a script while clients stay connected.

    GET  /status                                   -> {"ok": true, "url", "clients", "connections", "heartbeats"}
    POST /announce   {"tickers": ["ABC"], "publisher": "upbit", "listing_type": "spot_listing",
                      "title": optional, "test": false}          -> {"ok": true, "reached": n, "message": {...}}
    POST /close      {"code": 1000, "reason": "key_expired"}     -> {"ok": true, "clients": n}
    POST /heartbeats {"on": false}                               -> {"ok": true, "heartbeats": false}
    POST /drop                                                   -> {"ok": true, "clients": n}

A refused request answers 400 {"ok": false, "error": "..."}, is logged (`emulator.control_refused`) and
counted (`refused`); it never stops the emulator.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import orjson
import structlog
from aiohttp import web

from bridge.sim.emulator import FeedEmulator

log = structlog.get_logger(__name__)

DEFAULT_LISTING_TYPE = "spot_listing"
_TICKER = re.compile(r"[A-Za-z0-9._-]{1,20}")
_NAME = re.compile(r"[a-z0-9_]{1,40}")
_MAX_BODY = 16 * 1024
# Close codes a server may put in a close frame (RFC 6455 7.4: 1004-1006 and 1015 are never sent).
_SENDABLE_CODES = (*range(1000, 1004), *range(1007, 1015), *range(3000, 5000))
_TITLES = {
    "binance": "Binance Will List {names}",
    "upbit": "[Upbit] {names} KRW market listing",
    "bithumb": "[Bithumb] {names} KRW market listing",
}


class ControlError(ValueError):
    """A control request that cannot be carried out: answered 400 with the message."""


def announcement_fields(
    tickers: Sequence[str], publisher: str, listing_type: str = DEFAULT_LISTING_TYPE, title: str | None = None
) -> dict[str, Any]:
    """The wire fields of an announcement of `tickers` by `publisher` (checked; a title made up like
    the publisher's own when none is given). Publisher and listing type are lowercase on the wire."""
    names = [t.strip() for t in tickers if t.strip()]
    if not names or not all(_TICKER.fullmatch(t) for t in names):
        raise ControlError(f"tickers: expected names like ABC or ABC,DEF, got {','.join(tickers)!r}")
    publisher, listing_type = publisher.strip().lower(), listing_type.strip().lower()
    if not _NAME.fullmatch(publisher):
        raise ControlError(f"publisher: expected a name like upbit or binance, got {publisher!r}")
    if not _NAME.fullmatch(listing_type):
        raise ControlError(f"listing type: expected a name like spot_listing, got {listing_type!r}")
    if title is None:
        template = _TITLES.get(publisher, publisher.capitalize() + " lists {names}")
        title = template.format(names=", ".join(names))
    return {"title": title, "ticker": ",".join(names), "publisher": publisher, "listingType": listing_type}


def parse_announcement(words: Sequence[str]) -> dict[str, Any]:
    """`ABC upbit`, `ABC,DEF binance spot_listing`: tickers, publisher, optional listing type."""
    if len(words) not in (2, 3):
        raise ControlError(
            f"expected TICKERS PUBLISHER [LISTING_TYPE], e.g. 'ABC upbit', got {' '.join(words)!r}"
        )
    return announcement_fields(words[0].split(","), *words[1:])


class EmulatorControl:
    """The control endpoint of one FeedEmulator. `async with EmulatorControl(emu, port=0) as control`;
    `control.url` is where it listens (127.0.0.1 only: whoever reaches it can close every client)."""

    def __init__(self, emulator: FeedEmulator, *, port: int = 0) -> None:
        self.emulator = emulator
        self.port = port
        self.url = ""
        self.refused = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_get("/status", self._route(self._status))
        app.router.add_post("/announce", self._route(self._announce))
        app.router.add_post("/close", self._route(self._close))
        app.router.add_post("/heartbeats", self._route(self._heartbeats))
        app.router.add_post("/drop", self._route(self._drop))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"
        log.info("emulator.control_started", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- requests --------------------------------------------------------------------------------

    def _route(
        self, action: Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                body = await _body(request)
                answer = await action(body)
            except ControlError as exc:
                self.refused += 1
                log.warning("emulator.control_refused", path=request.path, error=str(exc))
                return _json({"ok": False, "error": str(exc)}, status=400)
            log.info(
                "emulator.control", path=request.path, **{k: v for k, v in answer.items() if k != "message"}
            )
            return _json({"ok": True, **answer})

        return handle

    async def _status(self, _: Mapping[str, Any]) -> dict[str, Any]:
        emu = self.emulator
        return {
            "url": emu.url,
            "clients": emu.client_count,
            "connections": emu.connections,
            "heartbeats": emu.heartbeats_on,
        }

    async def _announce(self, body: Mapping[str, Any]) -> dict[str, Any]:
        tickers = body.get("tickers")
        if isinstance(tickers, str):
            tickers = tickers.split(",")
        if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
            raise ControlError('tickers: expected a list of names, e.g. ["ABC"]')
        publisher = _text(body, "publisher")
        listing_type = _text(body, "listing_type", DEFAULT_LISTING_TYPE)
        title = body.get("title")
        if title is not None and (not isinstance(title, str) or not title.strip()):
            raise ControlError("title: expected text")
        fields = announcement_fields(tickers, publisher, listing_type, title)
        test = body.get("test", False)
        if not isinstance(test, bool):
            raise ControlError("test: expected true or false")
        if test:
            return {"reached": await self.emulator.send_test_announcement(**fields), "message": fields}
        return {"reached": await self.emulator.announce(**fields), "message": fields}

    async def _close(self, body: Mapping[str, Any]) -> dict[str, Any]:
        code = body.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or code not in _SENDABLE_CODES:
            raise ControlError(
                f"code: expected a close code a server may send (1000-1003, 1007-1014, 3000-4999), got {code!r}"
            )
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason.encode()) > 123:
            raise ControlError("reason: expected text of at most 123 bytes")
        clients = self.emulator.client_count
        await self.emulator.close_all(code, reason)
        return {"clients": clients, "code": code, "reason": reason}

    async def _heartbeats(self, body: Mapping[str, Any]) -> dict[str, Any]:
        on = body.get("on")
        if not isinstance(on, bool):
            raise ControlError('on: expected true (resume) or false (stop), e.g. {"on": false}')
        if on:
            self.emulator.resume_heartbeats()
        else:
            self.emulator.pause_heartbeats()
        return {"heartbeats": on}

    async def _drop(self, _: Mapping[str, Any]) -> dict[str, Any]:
        clients = self.emulator.client_count
        await self.emulator.drop_all()
        return {"clients": clients}


async def _body(request: web.Request) -> Mapping[str, Any]:
    if request.method == "GET":
        return {}
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ControlError(f"the body is over {_MAX_BODY} bytes") from None
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ControlError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body


def _text(body: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise ControlError(f"{key}: expected text")
    return value


def _json(obj: Mapping[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")
