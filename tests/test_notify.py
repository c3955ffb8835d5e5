"""The notifier against real local HTTP endpoints: webhook and Telegram bodies, retries with backoff
(delays recorded, never waited out), a hanging endpoint, the bounded queue, secrets kept out of logs
(the rules that turn gate changes, welcomes and orders into alerts: test_alert_rules)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from bridge import telemetry
from bridge.config import AlertsConfig, TelegramConfig, WebhookConfig
from bridge.ops.notify import MAX_ATTEMPTS, Notifier, backoff_delay
from bridge.secrets import Secret

HOOK_TOKEN = "whk_" + "7f3a" * 8
BOT_TOKEN = "123456789:AAH" + "q9Zx" * 8
WAIT = 5.0  # safety bound only


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]


class Endpoint:
    """A real HTTP server on 127.0.0.1 that records every POST. Answers come from `answers` (status,
    headers), 200 once it runs out; while `hold` is clear every request hangs until a test sets it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.answer_bodies: list[dict[str, Any]] = []  # JSON bodies for the answers, in turn
        self.hold = asyncio.Event()
        self.hold.set()
        self.url = ""
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self.hold.set()  # release hanging handlers so the server can shut down
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.path, await request.json()))
        async with self._changed:
            self._changed.notify_all()
        await self.hold.wait()
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        body = self.answer_bodies.pop(0) if self.answer_bodies else {"ok": status == 200}
        return web.json_response(body, status=status, headers=headers)

    async def wait_received(self, n: int) -> list[Received]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.received) >= n), WAIT)
        return self.received

    def events(self) -> list[str]:
        return [r.body["event"] for r in self.received]


class RecordingSleep:
    """Stands in for asyncio.sleep in backoff: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class VirtualTime:
    """A clock that moves only when the test advances it; `sleep` returns once virtual time has
    passed, so the notifier's feed watcher can be driven step by step."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._changed = asyncio.Condition()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        until = self.now + delay
        async with self._changed:
            self.sleeps.append(delay)
            self._changed.notify_all()
            await self._changed.wait_for(lambda: self.now >= until)

    async def advance(self, seconds: float) -> None:
        async with self._changed:
            self.now += seconds
            self._changed.notify_all()

    async def sleeping(self, n: int) -> list[float]:
        """Return once the n-th sleep has started."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sleeps) >= n), WAIT)
        return self.sleeps


@pytest.fixture
async def endpoints() -> AsyncIterator[Callable[[], Awaitable[Endpoint]]]:
    started: list[Endpoint] = []

    async def make() -> Endpoint:
        endpoint = Endpoint()
        await endpoint.start()
        started.append(endpoint)
        return endpoint

    yield make
    for endpoint in started:
        await endpoint.stop()


def webhook(endpoint: Endpoint, timeout: float = 5.0) -> WebhookConfig:
    return WebhookConfig(url=Secret(f"{endpoint.url}/hook/{HOOK_TOKEN}"), timeout=timeout)


def telegram(api_url: str, timeout: float = 5.0) -> TelegramConfig:
    return TelegramConfig(bot_token=Secret(BOT_TOKEN), chat_id="-10042", api_url=api_url, timeout=timeout)


def running(notifier: Notifier) -> AbstractAsyncContextManager[None]:
    """Run the notifier's sender for the block, then stop it and close it the way the daemon will."""

    @asynccontextmanager
    async def scope() -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, WAIT)
            await asyncio.wait_for(notifier.close(), WAIT)

    return scope()


def events_logged(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


# ---- what is sent ---------------------------------------------------------------------------------


async def test_webhook_body(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """The webhook gets one JSON POST at its own URL: event, text, fields, the host label and an
    ISO-8601 UTC time."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook), host_label="tokyo-1"))
    async with running(notifier):
        notifier.notify("started", "bridge started", dry_run=True, strategies=["listing_buy"])
        (got,) = await hook.wait_received(1)
    assert got.path == f"/hook/{HOOK_TOKEN}"
    assert {k: v for k, v in got.body.items() if k != "time"} == {
        "event": "started",
        "text": "bridge started",
        "fields": {"dry_run": True, "strategies": ["listing_buy"]},
        "host": "tokyo-1",
    }
    sent_at = datetime.fromisoformat(got.body["time"])
    assert sent_at.utcoffset() is not None and sent_at.utcoffset() == UTC.utcoffset(None)


async def test_telegram_path_and_body(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """Telegram gets POST {api_url}/bot{token}/sendMessage with chat_id and a plain text: the alert's
    text after the host label, then one `key: value` line per field."""
    tg = await endpoints()
    notifier = Notifier(AlertsConfig(telegram=telegram(tg.url), host_label="tokyo-1"))
    async with running(notifier):
        notifier.on_order("placed", exchange="binance", symbol="ABC/USDT", side="buy", client_order_id="bx1")
        (got,) = await tg.wait_received(1)
    assert got.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert got.body == {
        "chat_id": "-10042",
        "text": "[tokyo-1] Order placed: buy ABC/USDT on binance\n"
        "exchange: binance\nsymbol: ABC/USDT\nside: buy\nclient_order_id: bx1\nstatus: placed",
    }


async def test_event_switched_off_is_not_sent(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """`events: {order_placed: false}` silences that event on every channel; others still go out."""
    hook, tg = await endpoints(), await endpoints()
    cfg = AlertsConfig(webhook=webhook(hook), telegram=telegram(tg.url), events={"order_placed": False})
    notifier = Notifier(cfg)
    async with running(notifier):
        notifier.on_order("placed", exchange="binance", symbol="ABC/USDT", side="buy")
        notifier.on_order("rejected", exchange="binance", symbol="ABC/USDT", side="buy", reason="bad")
        await hook.wait_received(1)
        await tg.wait_received(1)
    # Each channel sends in order, so the rejection arriving first means the placement never left.
    assert hook.events() == ["order_rejected"]
    assert len(tg.received) == 1 and "] Order rejected" in tg.received[0].body["text"]


async def test_host_label_defaults_to_the_hostname(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    async with running(notifier):
        notifier.notify("started", "bridge started")
        (got,) = await hook.wait_received(1)
    assert got.body["host"] == socket.gethostname()


async def test_no_channels_is_a_no_op() -> None:
    """Without a webhook or Telegram, notify() does nothing and run() just waits for stop."""
    notifier = Notifier(AlertsConfig())
    assert not notifier.enabled
    notifier.notify("started", "bridge started")
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))
    stop.set()
    await asyncio.wait_for(task, WAIT)
    await notifier.close()


# ---- failures ----------------------------------------------------------------------------------------


async def test_500_then_200_is_retried_after_backoff(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """A 500 is logged (`alert.failed` with the status) and the same alert is sent again after the first
    backoff delay; the retry succeeds and nothing is dropped."""
    hook = await endpoints()
    hook.answers = [(500, {})]
    sleep = RecordingSleep()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)), sleep=sleep)
    with capture_logs() as logs:
        async with running(notifier):
            notifier.notify("stopping", "bridge is stopping")
            first, second = await hook.wait_received(2)
    assert first.body == second.body
    assert sleep.delays == [backoff_delay(1)] == [1.0]
    (failed,) = events_logged(logs, "alert.failed")
    assert failed["status"] == 500 and failed["attempt"] == 1 and failed["channel"] == "webhook"
    assert events_logged(logs, "alert.dropped") == []


async def test_gives_up_after_bounded_attempts_with_capped_backoff(
    endpoints: Callable[[], Awaitable[Endpoint]],
) -> None:
    """An endpoint that keeps failing gets MAX_ATTEMPTS tries with doubling delays, then the alert is
    dropped (`alert.dropped`, reason gave_up) and the next alert is sent; Retry-After is honoured."""
    hook = await endpoints()
    hook.answers = [(503, {})] * MAX_ATTEMPTS + [(429, {"Retry-After": "7"})]
    sleep = RecordingSleep()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)), sleep=sleep)
    dropped_before = telemetry.value("bridge_alerts_total", channel="webhook", outcome="dropped")
    with capture_logs() as logs:
        async with running(notifier):
            notifier.notify("feed_down", "one")
            notifier.notify("feed_down", "two")
            received = await hook.wait_received(MAX_ATTEMPTS + 2)
    assert [r.body["text"] for r in received] == ["one"] * MAX_ATTEMPTS + ["two", "two"]
    assert sleep.delays == [1.0, 2.0, 4.0, 7.0]
    (dropped,) = events_logged(logs, "alert.dropped")
    assert dropped["reason"] == "gave_up" and dropped["alert"] == "feed_down"
    assert telemetry.value("bridge_alerts_total", channel="webhook", outcome="dropped") == dropped_before + 1
    assert backoff_delay(30) == 30.0 and backoff_delay(2, retry_after=3600) == 30.0


async def test_telegram_retry_after_in_the_body_is_honoured(
    endpoints: Callable[[], Awaitable[Endpoint]],
) -> None:
    """Telegram's 429 says how long to wait in its JSON body (parameters.retry_after), not a header."""
    tg = await endpoints()
    tg.answers = [(429, {})]
    tg.answer_bodies = [{"ok": False, "error_code": 429, "parameters": {"retry_after": 9}}]
    sleep = RecordingSleep()
    notifier = Notifier(AlertsConfig(telegram=telegram(tg.url)), sleep=sleep)
    async with running(notifier):
        notifier.notify("started", "one")
        await tg.wait_received(2)
    assert sleep.delays == [9.0]


async def test_client_error_is_not_retried(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """A 4xx (bad token, unknown chat) will not change by asking again: dropped at once, no backoff."""
    tg = await endpoints()
    tg.answers = [(400, {})]
    sleep = RecordingSleep()
    notifier = Notifier(AlertsConfig(telegram=telegram(tg.url)), sleep=sleep)
    with capture_logs() as logs:
        async with running(notifier):
            notifier.notify("started", "one")
            notifier.notify("started", "two")
            await tg.wait_received(2)
    assert sleep.delays == []
    assert [e["reason"] for e in events_logged(logs, "alert.dropped")] == ["rejected"]


async def test_hanging_attempt_is_bounded_by_channel_timeout(
    endpoints: Callable[[], Awaitable[Endpoint]],
) -> None:
    """An endpoint that never answers costs at most the channel timeout per attempt: each attempt is
    logged as failed without a status, and after MAX_ATTEMPTS the alert is dropped."""
    hook = await endpoints()
    hook.hold.clear()
    sleep = RecordingSleep()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook, timeout=0.1)), sleep=sleep, flush_timeout=0.1)
    with capture_logs() as logs:
        async with running(notifier):
            notifier.notify("started", "one")
            notifier.notify("started", "two")
            await hook.wait_received(MAX_ATTEMPTS + 1)  # "two" in flight: "one" was given up
    failed = [e for e in events_logged(logs, "alert.failed") if e["attempt"] <= MAX_ATTEMPTS]
    assert len(failed) >= MAX_ATTEMPTS
    assert all(e["status"] is None and "Timeout" in e["error"] for e in failed)
    assert [e["reason"] for e in events_logged(logs, "alert.dropped")][:1] == ["gave_up"]


async def test_hanging_webhook_does_not_delay_telegram(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """Each channel sends on its own: Telegram gets every alert while the webhook's first request
    still hangs. On shutdown, close() gives the stuck alerts one bounded try, then drops them."""
    hook, tg = await endpoints(), await endpoints()
    hook.hold.clear()
    notifier = Notifier(
        AlertsConfig(webhook=webhook(hook, timeout=30), telegram=telegram(tg.url)), flush_timeout=0.1
    )
    with capture_logs() as logs:
        async with running(notifier):
            notifier.notify("started", "one")
            notifier.notify("order_placed", "two")
            await tg.wait_received(2)
            await hook.wait_received(1)
            assert len(hook.received) == 1  # still hanging on "one"
    dropped = events_logged(logs, "alert.dropped")
    assert [(e["channel"], e["reason"]) for e in dropped] == [("webhook", "shutdown")] * 2


async def test_full_queue_drops_oldest(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """notify() never waits: with the sender not keeping up, a full queue drops its oldest alert (logged
    with reason queue_full), so the newest alerts are the ones delivered."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)), max_queued=3)
    with capture_logs() as logs:
        for n in range(1, 6):
            notifier.notify("order_placed", f"order {n}")
        async with running(notifier):
            await hook.wait_received(3)
    assert [r.body["text"] for r in hook.received] == ["order 3", "order 4", "order 5"]
    assert [e["reason"] for e in events_logged(logs, "alert.dropped")] == ["queue_full"] * 2


async def test_close_flushes_queued_alerts(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """An alert queued just before shutdown (e.g. `stopping`) is still delivered by close()."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    notifier.stopping(reason="SIGTERM")
    await asyncio.wait_for(notifier.close(), WAIT)
    assert hook.events() == ["stopping"]
    assert hook.received[0].body["fields"] == {"reason": "SIGTERM"}


async def test_secrets_never_logged(
    endpoints: Callable[[], Awaitable[Endpoint]], caplog: pytest.LogCaptureFixture
) -> None:
    """Failures name the channel, status and error type only: neither the webhook URL's token nor the
    bot token appears in any log event (structlog or stdlib), even for a refused connection."""
    tg = await endpoints()
    tg.answers = [(401, {})]
    with socket.socket() as s:  # a port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook/{HOOK_TOKEN}"
    cfg = AlertsConfig(webhook=WebhookConfig(url=Secret(dead)), telegram=telegram(tg.url))
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        notifier = Notifier(cfg, sleep=RecordingSleep())
        async with running(notifier):
            notifier.notify("started", "bridge started")
            await tg.wait_received(1)
    failed = events_logged(logs, "alert.failed")
    assert {e["channel"] for e in failed} == {"webhook", "telegram"}
    assert any(e["error"] == "ClientConnectorError" for e in failed)
    assert any(e["status"] == 401 for e in failed)
    text = repr(logs) + caplog.text + repr([r.__dict__ for r in caplog.records])
    assert HOOK_TOKEN not in text and BOT_TOKEN not in text


async def test_secrets_scrubbed_from_alerts(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """A registered secret inside an alert's text or fields (say, in an error message) is sent as ***."""
    hook = await endpoints()
    leaked = Secret("sk_live_" + "Zq8" * 8).reveal()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    notifier.stopping(error=f"auth failed for key {leaked}", keys=[leaked], nested={"k": leaked}, code=77)
    notifier.notify("trading_halted", f"halted: {leaked}")
    await asyncio.wait_for(notifier.close(), WAIT)
    assert leaked not in repr([r.body for r in hook.received])
    assert hook.received[0].body["fields"] == {
        "error": "auth failed for key ***",
        "keys": ["***"],
        "nested": {"k": "***"},
        "code": 77,
    }
    assert hook.received[1].body["text"] == "halted: ***"
