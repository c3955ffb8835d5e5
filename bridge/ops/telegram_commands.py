"""Commands from the phone: a Telegram Bot API long-poller (`getUpdates`) that accepts `/status`,
`/positions`, `/halt`, `/resume`, `/close SYMBOL [EXCHANGE]` and `/reload` from the listed user ids in the
listed chats only (`alerts.telegram.commands`, `allowed_user_ids`, `chat_ids`), answers each in the chat
and logs it with who sent it. Anything else is ignored and logged once per sender or kind.

Telegram allows one getUpdates poller per bot token: a second gets HTTP 409 Conflict (also while a webhook
is set on the bot). That is logged as an error once, with what to do, and polling retries slowly so the
commands come back once the other poller is gone. A message sent while the daemon was not running (older
than STALE_AFTER_S) is answered but not acted on: a /close from an hour ago must not fire on a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
import structlog

from bridge import retry, secrets
from bridge.aio import Sleep
from bridge.config import TelegramConfig
from bridge.ops import metrics

log = structlog.get_logger(__name__)

# What one command does: its arguments in, the answer's text out (a BridgeError or ValueError is
# answered as "failed: ...").
Command = Callable[[list[str]], Awaitable[str]]
COMMANDS = ("status", "positions", "halt", "resume", "close", "reload")

POLL_TIMEOUT_S = 25  # Telegram holds getUpdates open this long when nothing comes
CONFLICT_RETRY_S = 60.0  # another poller holds the token: ask again this often
ERROR_BACKOFF_FIRST, ERROR_BACKOFF_MAX = 1.0, 60.0
STALE_AFTER_S = 120.0
MAX_ANSWER = 4000  # Telegram refuses texts over 4096 characters


class TelegramCommands:
    def __init__(
        self,
        cfg: TelegramConfig,
        commands: Mapping[str, Command],
        *,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], float] | None = None,
    ) -> None:
        self._cfg = cfg
        self._commands = dict(commands)
        self._sleep = sleep
        self._now = now
        self._offset: int | None = None
        self._chats = {str(c) for c in cfg.command_chats}
        self._users = set(cfg.allowed_user_ids)
        self._ignored_once: set[tuple[str, ...]] = set()
        self._conflict = False

    def _url(self, method: str) -> str:
        return f"{self._cfg.api_url.rstrip('/')}/bot{self._cfg.bot_token.reveal()}/{method}"

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. Never raises (a failing Telegram only costs the commands)."""
        log.info("telegram.commands_started", chats=sorted(self._chats), users=sorted(self._users))
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S + self._cfg.timeout)
        failures = 0
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                poll = asyncio.ensure_future(self._poll(session))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not poll.done():
                    poll.cancel()
                    await asyncio.gather(poll, return_exceptions=True)
                    break
                wait = poll.result()
                failures = 0 if wait == 0.0 else failures + 1
                if wait is None:  # a failure that says nothing of when to ask again: the one backoff
                    wait = retry.backoff_delay(failures, ERROR_BACKOFF_FIRST, ERROR_BACKOFF_MAX, jitter=0.0)
                if wait:
                    await self._sleep(wait)
        log.info("telegram.commands_stopped")

    async def _poll(self, session: aiohttp.ClientSession) -> float | None:
        """One getUpdates and the commands it brought. Returns how long to wait before the next: 0 on
        success, what Telegram said (409, 429), or None for the backoff."""
        params: dict[str, Any] = {"timeout": POLL_TIMEOUT_S, "allowed_updates": '["message"]'}
        if self._offset is not None:
            params["offset"] = self._offset
        try:
            async with session.get(self._url("getUpdates"), params=params) as resp:
                status, body = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("telegram.poll_failed", error=type(exc).__name__)
            return None
        if status == 409:
            if not self._conflict:
                self._conflict = True
                metrics.TELEGRAM_COMMANDS.labels("conflict").inc()
                log.error(
                    "telegram.poller_conflict",
                    description=_description(body),
                    hint="another process polls this bot token (or a webhook is set on it): Telegram "
                    "allows one; give each daemon its own bot, or stop the other poller",
                )
            return CONFLICT_RETRY_S
        if status == 429:
            return retry.retry_after_telegram(body) or ERROR_BACKOFF_MAX
        if status != 200:
            log.warning("telegram.poll_failed", status=status, description=_description(body))
            return ERROR_BACKOFF_MAX if status in (401, 404) else None
        if self._conflict:
            self._conflict = False
            log.info("telegram.poller_resumed")
        try:
            updates = orjson.loads(body).get("result") or []
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("telegram.poll_unreadable")
            return None
        for update in updates if isinstance(updates, list) else []:
            if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                self._offset = update["update_id"] + 1  # acknowledged with the next poll
                await self._handle(session, update.get("message"))
        return 0.0

    async def _handle(self, session: aiohttp.ClientSession, message: Any) -> None:
        if not isinstance(message, dict):
            return
        text = message.get("text")
        chat = str((message.get("chat") or {}).get("id"))
        user = (message.get("from") or {}).get("id")
        if not isinstance(text, str) or not text.startswith("/"):
            self._ignore("not_a_command", chat, str(user))
            return
        if chat not in self._chats or user not in self._users:
            self._ignore("not_allowed", chat, str(user))  # never answered: a stranger learns nothing
            return
        name, *args = text.split()
        name = name[1:].split("@", 1)[0].lower()  # "/status@my_bot" in a group
        command = self._commands.get(name)
        if command is None:
            self._ignore("unknown_command", chat, str(user), name[:32])
            return
        age = self._age(message)
        if age is not None and age > STALE_AFTER_S:
            answer, outcome = (
                f"not done: sent {int(age)} s ago, while bridge was not running; send it again",
                "stale",
            )
        else:
            try:
                answer, outcome = await command(args), "ok"
            except Exception as exc:  # noqa: BLE001 - a failed command is answered, never crashes the poller
                answer, outcome = f"failed: {secrets.scrub(str(exc)) or type(exc).__name__}", "failed"
        metrics.TELEGRAM_COMMANDS.labels(outcome).inc()
        log.warning(
            "telegram.command", command=name, args=args[:4], user_id=user, chat_id=chat, outcome=outcome
        )
        await self._answer(session, chat, f"/{name}: {answer}")

    def _age(self, message: dict[str, Any]) -> float | None:
        sent = message.get("date")
        if not isinstance(sent, int | float) or self._now is None:
            return None
        return self._now() - float(sent)

    def _ignore(self, reason: str, *key: str) -> None:
        metrics.TELEGRAM_COMMANDS.labels("ignored").inc()
        if (reason, *key) in self._ignored_once:
            return
        self._ignored_once.add((reason, *key))
        log.warning("telegram.command_ignored", reason=reason, chat_id=key[0], user_id=key[1])

    async def _answer(self, session: aiohttp.ClientSession, chat: str, text: str) -> None:
        body = {"chat_id": chat, "text": secrets.clip(secrets.scrub(text), MAX_ANSWER)}
        try:
            async with session.post(
                self._url("sendMessage"),
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._cfg.timeout),
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    log.warning("telegram.answer_failed", status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("telegram.answer_failed", error=type(exc).__name__)


def _description(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = data.get("description") if isinstance(data, dict) else None
    return secrets.scrub(str(value))[:200] if value is not None else None
