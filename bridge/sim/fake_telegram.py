"""A local fake of the Telegram Bot API, enough for bridge's alerts and commands: `getUpdates` (long
polling with `offset` and `timeout`, answered at once when updates wait), `sendMessage` (recorded), a
wrong token answered 401, and a second poller answered 409 Conflict as Telegram does.

    async with FakeTelegram(token) as tg:
        tg.say("/status", user_id=42, chat_id="-100")   # a person types a command
        answer = await tg.next_sent()                   # what the bot answered
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from types import TracebackType
from typing import Any, Self

from aiohttp import web

MAX_POLL_S = 30.0


class FakeTelegram:
    def __init__(self, token: str) -> None:
        self.token = token
        self.url = ""
        self.sent: list[dict[str, Any]] = []
        self.polls = 0
        self.conflict = False  # answer getUpdates 409, as when another process polls this token
        self._updates: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/bot{token}/getUpdates", self._get_updates)
        app.router.add_post("/bot{token}/sendMessage", self._send_message)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # ----- the test's side -----

    def say(self, text: str, *, user_id: int, chat_id: str, age_s: float = 0.0) -> int:
        """A message from `user_id` in `chat_id`, sent `age_s` seconds ago; its update id."""
        update_id = next(self._ids)
        chat = int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id
        self._updates.append(
            {
                "update_id": update_id,
                "message": {
                    "message_id": update_id,
                    "date": int(time.time() - age_s),
                    "chat": {"id": chat, "type": "group"},
                    "from": {"id": user_id, "is_bot": False, "first_name": "t"},
                    "text": text,
                },
            }
        )
        asyncio.get_running_loop().create_task(self._wake())
        return update_id

    async def next_sent(self, count: int = 1, within: float = 5.0) -> list[dict[str, Any]]:
        """The first `count` messages the bot sent, once that many were sent (in all, since the start)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sent) >= count), within)
        return self.sent[:count]

    async def sent_starting(self, prefix: str, within: float = 5.0) -> dict[str, Any]:
        """The first message the bot sent whose text starts with `prefix`, once there is one."""

        def found() -> dict[str, Any] | None:
            return next((m for m in self.sent if str(m.get("text", "")).startswith(prefix)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), within)
        message = found()
        assert message is not None
        return message

    async def wait_polls(self, count: int, within: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.polls >= count), within)

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ----- the API -----

    def _authorised(self, request: web.Request) -> web.Response | None:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        return None

    async def _get_updates(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        self.polls += 1
        await self._wake()
        if self.conflict:
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 409,
                    "description": "Conflict: terminated by other getUpdates request; make sure that only"
                    " one bot instance is running",
                },
                status=409,
            )
        offset = int(request.query.get("offset", "0"))
        self._updates = [u for u in self._updates if u["update_id"] >= offset]  # acknowledged ones go
        wait = min(float(request.query.get("timeout", "0")), MAX_POLL_S)
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: bool(self._updates) or self._closing.is_set()), wait
                )
        return web.json_response({"ok": True, "result": list(self._updates)})

    async def _send_message(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.sent.append(body)
        await self._wake()
        return web.json_response(
            {"ok": True, "result": {"message_id": len(self.sent), "text": body.get("text")}}
        )
