"""Alerts for operators: daemon events pushed to a webhook and/or Telegram by background tasks.

`notify()` only enqueues (bounded, oldest dropped first), so alerting can never delay trading.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import orjson
import structlog

from bridge import retry, secrets
from bridge.aio import Sleep
from bridge.config import AlertsConfig, TelegramConfig, WebhookConfig
from bridge.feed.codec import Welcome
from bridge.ops import metrics
from bridge.trading.gate import TradingGate
from bridge.trading.halts import rule_for, split_key

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Result = Literal["sent", "retry", "rejected"]

QUEUE_SIZE = 100  # per channel; alerts are rare, so a full queue means the endpoint has been gone a while
MAX_ATTEMPTS = 4  # per alert and channel, then it is dropped
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
FLUSH_TIMEOUT = 3.0  # close() gives queued alerts this long, so shutdown stays prompt
KEY_ALERT_EVERY = 86400.0  # key_expiring at most once a day
TELEGRAM_MAX_TEXT = 4000  # Telegram refuses texts over 4096 characters

# Feed outages earn `feed_down` once they last; the halt table keeps them (and start-up, shutdown) out
# of `trading_halted`: a reconnect blip halts trading for a second or two, and paging on each one
# would teach people to ignore us.
FEED_REASONS = frozenset({"disconnected", "feed_stale"})

# Order outcome status -> (alert event, headline). `skipped` is routine (gate, risk limits): log only.
ORDER_ALERTS: Mapping[str, tuple[str, str]] = {
    "placed": ("order_placed", "Order placed"),
    "paper": ("order_placed", "Paper order placed"),
    "rejected": ("order_rejected", "Order rejected"),
    "unknown": (
        "order_rejected",
        "Order status UNKNOWN (it may have executed; not resent: check the exchange)",
    ),
    "not_found": ("order_rejected", "Order not found after a timeout (not resent: check the exchange)"),
}

_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Alert:
    event: str
    text: str
    fields: dict[str, Any]
    time: str  # ISO 8601 UTC, when notify() was called
    host: str = ""  # alerts.host_label, default this machine's name: which daemon of several


RequestBuilder = Callable[[Alert], tuple[str, dict[str, Any]]]


@dataclass(eq=False)
class Channel:
    """One destination with its own queue and sender task, so a dead webhook never delays Telegram."""

    name: str
    timeout: aiohttp.ClientTimeout
    build: RequestBuilder  # alert -> (url, JSON body); the only place a secret URL or token is revealed
    pending: deque[Alert] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


def webhook_channel(cfg: WebhookConfig) -> Channel:
    def build(alert: Alert) -> tuple[str, dict[str, Any]]:
        body = {
            "event": alert.event,
            "text": alert.text,
            "fields": alert.fields,
            "time": alert.time,
            "host": alert.host,
        }
        return cfg.url.reveal(), body

    return Channel("webhook", aiohttp.ClientTimeout(total=cfg.timeout), build)


def telegram_channel(cfg: TelegramConfig) -> Channel:
    def build(alert: Alert) -> tuple[str, dict[str, Any]]:
        url = f"{cfg.api_url.rstrip('/')}/bot{cfg.bot_token.reveal()}/sendMessage"
        return url, {"chat_id": cfg.chat_id, "text": telegram_text(alert)}

    return Channel("telegram", aiohttp.ClientTimeout(total=cfg.timeout), build)


def telegram_text(alert: Alert) -> str:
    """The alert as a plain chat message: the text, then one `key: value` line per field."""
    headline = f"[{alert.host}] {alert.text}" if alert.host else alert.text
    lines = [headline, *(f"{k}: {_plain(v)}" for k, v in alert.fields.items() if v is not None)]
    # Scrubbed again as a whole before the cut (never after: a cut through a secret hides it from the
    # scrubber); the alert's parts were scrubbed when it was queued.
    return secrets.clip("\n".join(lines), TELEGRAM_MAX_TEXT)


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value)
    return str(value)


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Wait after failed attempt number `attempt` (1-based): doubling from BACKOFF_FIRST, never less
    than the server's Retry-After, never more than BACKOFF_MAX (an alert is not worth a long wait)."""
    delay = retry.backoff_delay(attempt, BACKOFF_FIRST, BACKOFF_MAX, jitter=0.0)
    return min(BACKOFF_MAX, max(delay, retry_after or 0.0))


class Notifier:
    """Pushes alerts from background tasks. Call `notify()` (or the `on_*` hooks) from anywhere in the
    event loop; run `run(stop)` as a task; `await close()` last."""

    def __init__(
        self,
        cfg: AlertsConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_queued: int = QUEUE_SIZE,
        flush_timeout: float = FLUSH_TIMEOUT,
    ) -> None:
        self._cfg = cfg
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._sleep = sleep
        self._max_queued = max_queued
        self._flush_timeout = flush_timeout
        self._channels: list[Channel] = []
        self._host = secrets.scrub(cfg.host_label or socket.gethostname())
        if cfg.webhook is not None:
            self._channels.append(webhook_channel(cfg.webhook))
        if cfg.telegram is not None:
            self._channels.append(telegram_channel(cfg.telegram))
        self._halt_alerted = False  # a trading_halted went out; the next arming earns trading_resumed
        self._gate: TradingGate | None = None
        self._feed_reasons: frozenset[str] = frozenset()
        self._down_since: float | None = None
        self._down_alerted = False
        self._feed_changed = asyncio.Event()
        self._key_alerted_at: float | None = None
        self._stopping = False
        self._feed_gone = False  # exits-only mode: the feed will not come back, as exits_only said

    def reconfigure(self, cfg: AlertsConfig) -> None:
        """A reload's new alert settings (events, feed_down_after, key_expiry_days, host_label); the
        channels (webhook, telegram) are built once: changing them needs a restart."""
        self._cfg = cfg
        self._host = secrets.scrub(cfg.host_label or socket.gethostname())

    @property
    def enabled(self) -> bool:
        """Whether any channel is configured."""
        return bool(self._channels)

    # ---- the caller's side: synchronous, never awaits ----------------------------------------------

    def notify(self, event: str, text: str, /, **fields: Any) -> None:
        """Queue an alert for every channel, unless `event` is switched off. Never blocks: when a
        channel's queue is full its oldest alert is dropped (logged and counted)."""
        if not self._channels or not self._cfg.wants(event):
            return
        # Alerts leave the machine without passing the log scrubber: a secret that found its way into
        # an error message must not reach a chat. Fields become plain data (bytes, sets, exceptions and
        # other objects by their scrubbed text), so neither body builder stringifies an object later.
        alert = Alert(
            event,
            secrets.scrub(text),
            secrets.scrub_value(fields),
            datetime.now(UTC).isoformat(timespec="seconds"),
            self._host,
        )
        for channel in self._channels:
            if len(channel.pending) >= self._max_queued:
                self._dropped(channel, channel.pending.popleft(), "queue_full")
            channel.pending.append(alert)
            channel.wakeup.set()

    def started(self, **fields: Any) -> None:
        self.notify("started", "bridge started", **fields)

    def stopping(self, **fields: Any) -> None:
        self._stopping = True  # the feed going down now is expected: no feed_down
        self.notify("stopping", "bridge is stopping", **fields)

    def attach(self, gate: TradingGate) -> None:
        """Follow `gate`: take its current state as the starting point, then every change."""
        self._gate = gate
        self._track_feed(gate.in_force)
        gate.subscribe(self.on_gate_change)

    def on_gate_change(self, armed: bool, reasons: frozenset[str], reason: str) -> None:
        """A TradingGate listener: trading_halted when a halt reason the halt table marks as alerting is
        set (a venue-scoped one names its venue); trading_resumed when trading is armed again after
        such an alert."""
        self._track_feed(reasons)
        name, qualifier = split_key(reason)
        link_reason = qualifier is not None and rule_for(name).scope == "link" and rule_for(name).alerts
        if link_reason and self._gate is not None and reason in self._gate.reasons:  # set, not cleared
            up = sorted(self._gate.covering_links)
            self.notify(
                "feed_link_down",
                f"Feed link {qualifier} down: {name}"
                + (f"; trading goes on over {', '.join(up)}" if armed else ""),
                link=qualifier,
                reason=name,
                links_up=up,
            )
        if armed:
            if self._halt_alerted:
                self._halt_alerted = False
                self.notify("trading_resumed", "Trading resumed", reason=reason)
            return
        if reason in reasons and rule_for(reason).alerts:
            self._halt_alerted = True
            name, venue = split_key(reason)
            if venue is not None and rule_for(name).scope == "link":
                self.notify(
                    "trading_halted",
                    f"Trading halted: no feed link left up ({name} on {venue})",
                    reason=name,
                    link=venue,
                    reasons=sorted(reasons),
                )
            elif venue is None:
                self.notify("trading_halted", f"Trading halted: {name}", reason=name, reasons=sorted(reasons))
            else:
                self.notify(
                    "trading_halted",
                    f"Trading halted on {venue}: {name}",
                    reason=name,
                    venue=venue,
                    reasons=sorted(reasons),
                )

    def on_welcome(self, welcome: Welcome) -> None:
        """key_expiring when the feed key expires within key_expiry_days; at most once a day."""
        expires = welcome.expires_in_secs
        if expires is None or expires >= self._cfg.key_expiry_days * 86400:
            return
        now = self._clock()
        if self._key_alerted_at is not None and now - self._key_alerted_at < KEY_ALERT_EVERY:
            return
        self._key_alerted_at = now
        days = round(expires / 86400, 1)
        self.notify(
            "key_expiring",
            f"Feed API key expires in {days} days: get a new one",
            expires_in_days=days,
            tier=welcome.tier,
        )

    def on_order(self, outcome_status: str, **fields: Any) -> None:
        """order_placed (placed, paper) or order_rejected (rejected, and unknown / not_found, which need
        a human just as much); `fields` such as exchange, symbol, side, client_order_id, reason."""
        known = ORDER_ALERTS.get(outcome_status)
        if known is None:
            return
        event, headline = known
        self.notify(event, _order_text(headline, fields), **{**fields, "status": outcome_status})

    def exit_failed(self, exchange: str, symbol: str, client_order_id: str | None, reason: str) -> None:
        """exit_failed: an exit sell was refused or failed; the position is still open."""
        self.notify(
            "exit_failed",
            f"Exit failed: sell {symbol} on {exchange} ({reason}); the position is still open",
            exchange=exchange,
            symbol=symbol,
            client_order_id=client_order_id,
            reason=reason,
        )

    def position_abandoned(self, exchange: str, symbol: str, entry_client_order_id: str, reason: str) -> None:
        """position_abandoned: bridge stopped trying to close a position; a human must."""
        self.notify(
            "position_abandoned",
            f"Position abandoned: {symbol} on {exchange} is no longer managed ({reason}); close it by hand",
            exchange=exchange,
            symbol=symbol,
            entry_client_order_id=entry_client_order_id,
            reason=reason,
        )

    def ha_role(self, role: str, **fields: Any) -> None:
        """ha_role: this host of a pair (ha:) became `leader` (it sends the orders) or `standby` (none)."""
        does = "sends the orders" if role == "leader" else "sends no order"
        self.notify("ha_role", f"Now {role}: this host {does}", role=role, **fields)

    def exits_only(self, *, reason: str, positions: list[str]) -> None:
        """exits_only: the feed is gone for good (its key is dead) but positions are open, so the daemon
        keeps watching them for their exits (no new entries) and stops once flat. No feed_down follows:
        this alert already says the feed is gone."""
        self._feed_gone = True
        self._feed_changed.set()
        self.notify(
            "exits_only",
            f"Feed lost for good; exits only until {len(positions)} open position(s) are closed",
            reason=reason,
            open_positions=len(positions),
            positions=positions,
        )

    # ---- feed outage detection ------------------------------------------------------------------------

    def _track_feed(self, reasons: frozenset[str]) -> None:
        self._feed_reasons = frozenset(k for k in reasons if split_key(k)[0] in FEED_REASONS)
        if self._feed_reasons and self._down_since is None:
            self._down_since = self._clock()
            self._feed_changed.set()
        elif not self._feed_reasons and self._down_since is not None:
            if self._down_alerted:
                down_s = round(self._clock() - self._down_since)
                self.notify("feed_down", f"Feed is back after {down_s} s", recovered=True, down_s=down_s)
            self._down_since = None
            self._down_alerted = False
            self._feed_changed.set()

    def _feed_down_in(self) -> float | None:
        """Seconds until the current outage earns `feed_down`; None when there is nothing to wait for."""
        if self._down_since is None or self._down_alerted or self._stopping or self._feed_gone:
            return None
        return self._down_since + self._cfg.feed_down_after - self._clock()

    async def _watch_feed(self) -> None:
        while True:
            remaining = self._feed_down_in()
            if remaining is None:
                self._feed_changed.clear()
                await self._feed_changed.wait()
            elif remaining > 0:
                await self._sleep(remaining)
            else:
                self._feed_is_down()

    def _feed_is_down(self) -> None:
        assert self._down_since is not None
        self._down_alerted = True
        down_s = round(self._clock() - self._down_since)
        self.notify(
            "feed_down",
            f"Feed down for {down_s} s: trading is halted",
            recovered=False,
            down_s=down_s,
            reasons=sorted(self._feed_reasons),
        )

    # ---- the sending side -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Send queued alerts and watch for feed outages until `stop` is set. Never raises (except
        when cancelled). An alert cut off mid-send stays queued for close()."""
        if not self._channels:
            await stop.wait()
            return
        log.info("alert.started", channels=[c.name for c in self._channels])
        session = self._ensure_session()
        tasks = [
            asyncio.create_task(self._send_loop(session, c), name=f"alerts:{c.name}") for c in self._channels
        ]
        tasks.append(asyncio.create_task(self._watch_feed(), name="alerts:feed"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Try each alert still queued once, all within `flush_timeout` seconds (the rest are dropped
        and logged), then close the session if it is ours."""
        try:
            if any(c.pending for c in self._channels):
                session = self._ensure_session()
                try:
                    async with asyncio.timeout(self._flush_timeout):
                        await asyncio.gather(*(self._flush(session, c) for c in self._channels))
                except TimeoutError:
                    pass  # whatever is left is dropped below, each one logged
                for channel in self._channels:
                    while channel.pending:
                        self._dropped(channel, channel.pending.popleft(), "shutdown")
        finally:
            if self._own_session and self._session is not None:
                await self._session.close()
                self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()  # per-request timeouts come from each channel
        return self._session

    async def _send_loop(self, session: aiohttp.ClientSession, channel: Channel) -> None:
        while True:
            while not channel.pending:
                channel.wakeup.clear()
                await channel.wakeup.wait()
            alert = channel.pending.popleft()
            try:
                await self._deliver(session, channel, alert)
            except asyncio.CancelledError:
                channel.pending.appendleft(alert)  # stopped mid-send: close() gives it one more try
                raise
            except Exception:  # a bug here must not end alerting for the rest of the run
                log.exception("alert.failed", channel=channel.name, alert=alert.event)
                self._dropped(channel, alert, "error")

    async def _deliver(self, session: aiohttp.ClientSession, channel: Channel, alert: Alert) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            result, retry_after = await self._post(session, channel, alert, attempt)
            if result == "sent":
                return
            if result == "rejected":
                self._dropped(channel, alert, "rejected")  # a 4xx will not change by asking again
                return
            if attempt < MAX_ATTEMPTS:
                await self._sleep(backoff_delay(attempt, retry_after))
        self._dropped(channel, alert, "gave_up")

    async def _flush(self, session: aiohttp.ClientSession, channel: Channel) -> None:
        while channel.pending:
            alert = channel.pending.popleft()
            try:
                result, _ = await self._post(session, channel, alert, attempt=1)
            except asyncio.CancelledError:
                channel.pending.appendleft(alert)  # out of time: counted as dropped by close()
                raise
            if result != "sent":
                self._dropped(channel, alert, "shutdown")

    async def _post(
        self, session: aiohttp.ClientSession, channel: Channel, alert: Alert, attempt: int
    ) -> tuple[Result, float | None]:
        """One attempt. Logs only the channel, status and error type: the URL holds the secret."""
        url, body = channel.build(alert)
        try:
            async with session.post(
                url, data=orjson.dumps(body, default=str), headers=_JSON_HEADERS, timeout=channel.timeout
            ) as resp:
                answer = await resp.read()  # within the timeout, and lets the connection be reused
                status = resp.status
                retry_after = retry.retry_after_header(resp.headers)
                if retry_after is None and channel.name == "telegram":
                    retry_after = retry.retry_after_telegram(answer)  # its 429 says it in the body
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._failed(channel, alert, attempt, None, type(exc).__name__)
            return "retry", None
        if 200 <= status < 300:
            metrics.ALERTS.labels(channel.name, "sent").inc()
            log.debug("alert.sent", channel=channel.name, alert=alert.event, attempt=attempt)
            return "sent", None
        self._failed(channel, alert, attempt, status, None)
        if status in (408, 429) or status >= 500:
            return "retry", retry_after
        return "rejected", None

    def _failed(
        self, channel: Channel, alert: Alert, attempt: int, status: int | None, error: str | None
    ) -> None:
        metrics.ALERTS.labels(channel.name, "failed").inc()
        log.warning(
            "alert.failed",
            channel=channel.name,
            alert=alert.event,
            attempt=attempt,
            status=status,
            error=error,
        )

    def _dropped(self, channel: Channel, alert: Alert, reason: str) -> None:
        metrics.ALERTS.labels(channel.name, "dropped").inc()
        log.warning("alert.dropped", channel=channel.name, alert=alert.event, reason=reason)


def _order_text(headline: str, fields: Mapping[str, Any]) -> str:
    what = " ".join(str(fields[k]) for k in ("side", "symbol") if fields.get(k))
    where = f" on {fields['exchange']}" if fields.get("exchange") else ""
    return f"{headline}: {what}{where}" if what else headline + where
