"""Commands from the phone (issue 13): the Telegram poller against a local fake Bot API, accepted only
from allowed_user_ids in the listed chats, answered and logged with who sent it; /halt kept across a
restart until /resume; 409 (a second poller) detected and said once; the real daemon end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.config import TelegramConfig
from bridge.daemon import Daemon
from bridge.ops.telegram_commands import Command, TelegramCommands
from bridge.secrets import Secret
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from bridge.sim.fake_telegram import FakeTelegram
from tests.test_daemon import KEY, Running, make_config

TOKEN = "123456:FAKE-bot-token-for-tests"
CHAT = "-10042"
OWNER, STRANGER = 42, 666


def tg_config(fake: FakeTelegram, **extra: object) -> TelegramConfig:
    return TelegramConfig(
        bot_token=Secret(TOKEN),
        chat_id=CHAT,
        api_url=fake.url,
        commands=True,
        allowed_user_ids=(OWNER,),
        **extra,  # type: ignore[arg-type]
    )


class Instant:
    """An injected sleep that returns at once and records what was asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as fake:
        yield fake


async def polling(commands: TelegramCommands) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(commands.run(stop))


async def test_an_allowed_user_commands_and_is_answered(telegram: FakeTelegram) -> None:
    called: list[list[str]] = []

    async def close(args: list[str]) -> str:
        called.append(args)
        return "closing ABC/USDT"

    table: dict[str, Command] = {"close": close}
    with capture_logs() as logs:
        stop, task = await polling(TelegramCommands(tg_config(telegram), table, now=time.time))
        telegram.say("/close abc/usdt binance", user_id=OWNER, chat_id=CHAT)
        (answer,) = await telegram.next_sent(1)
        stop.set()
        await task
    assert called == [["abc/usdt", "binance"]]
    assert answer == {"chat_id": CHAT, "text": "/close: closing ABC/USDT"}
    (logged,) = [e for e in logs if e["event"] == "telegram.command"]
    assert (logged["user_id"], logged["chat_id"], logged["command"], logged["outcome"]) == (
        OWNER,
        CHAT,
        "close",
        "ok",
    )


async def test_strangers_other_chats_and_unknown_commands_are_ignored_and_logged_once(
    telegram: FakeTelegram,
) -> None:
    """A group member not listed, the owner in another chat, and an unknown command: never answered,
    never run, each logged once however often it is sent; the owner's next command still works."""
    ran: list[str] = []

    async def halt(_: list[str]) -> str:
        ran.append("halt")
        return "halted"

    with capture_logs() as logs:
        stop, task = await polling(TelegramCommands(tg_config(telegram), {"halt": halt}))
        for _ in range(2):
            telegram.say("/halt", user_id=STRANGER, chat_id=CHAT)
            telegram.say("/halt", user_id=OWNER, chat_id="-999")
            telegram.say("/selfdestruct", user_id=OWNER, chat_id=CHAT)
        telegram.say("/halt@my_bridge_bot", user_id=OWNER, chat_id=CHAT)
        (answer,) = await telegram.next_sent(1)
        stop.set()
        await task
    assert ran == ["halt"] and answer["text"] == "/halt: halted"
    ignored = [
        (e["reason"], e["chat_id"], e["user_id"]) for e in logs if e["event"] == "telegram.command_ignored"
    ]
    assert sorted(ignored) == sorted(
        [
            ("not_allowed", CHAT, str(STRANGER)),
            ("not_allowed", "-999", str(OWNER)),
            ("unknown_command", CHAT, str(OWNER)),
        ]
    )


async def test_a_message_sent_while_bridge_was_down_is_not_acted_on(telegram: FakeTelegram) -> None:
    """A /close typed an hour ago must not fire when the daemon comes back: answered, not run."""
    ran: list[str] = []

    async def close(_: list[str]) -> str:
        ran.append("close")
        return "closing"

    stop, task = await polling(TelegramCommands(tg_config(telegram), {"close": close}, now=time.time))
    telegram.say("/close ABC/USDT", user_id=OWNER, chat_id=CHAT, age_s=3600)
    (answer,) = await telegram.next_sent(1)
    stop.set()
    await task
    assert ran == [] and "not done: sent 36" in answer["text"]


async def test_a_second_poller_is_detected_and_said_once(telegram: FakeTelegram) -> None:
    """Telegram answers 409 to a second getUpdates poller: logged as an error once (with what to do),
    retried every CONFLICT_RETRY_S, and commands come back once the other poller is gone."""
    telegram.conflict = True
    sleep = Instant()

    async def status(_: list[str]) -> str:
        return "ok"

    with capture_logs() as logs:
        stop, task = await polling(TelegramCommands(tg_config(telegram), {"status": status}, sleep=sleep))
        await telegram.wait_polls(3)
        telegram.conflict = False
        telegram.say("/status", user_id=OWNER, chat_id=CHAT)
        await telegram.next_sent(1)
        stop.set()
        await task
    conflicts = [e for e in logs if e["event"] == "telegram.poller_conflict"]
    assert (
        len(conflicts) == 1 and conflicts[0]["log_level"] == "error" and "its own bot" in conflicts[0]["hint"]
    )
    assert set(sleep.delays[:2]) == {60.0}
    assert any(e["event"] == "telegram.poller_resumed" for e in logs)


async def test_a_failing_command_is_answered_not_fatal(telegram: FakeTelegram) -> None:
    async def positions(_: list[str]) -> str:
        raise ValueError("journal busy")

    stop, task = await polling(TelegramCommands(tg_config(telegram), {"positions": positions}))
    telegram.say("/positions", user_id=OWNER, chat_id=CHAT)
    telegram.say("/positions", user_id=OWNER, chat_id=CHAT)
    answers = await telegram.next_sent(2)
    stop.set()
    await task
    assert [a["text"] for a in answers] == ["/positions: failed: journal busy"] * 2


# ----- the daemon, end to end -----


async def test_daemon_halt_survives_a_restart_until_resume(telegram: FakeTelegram, tmp_path: Path) -> None:
    """/status and /positions answer; /halt stops new entries (operator_halt) and is still in force
    after a restart; /resume lifts it; the bot token never appears in a log line."""
    top = (
        f'alerts: {{telegram: {{bot_token: "{TOKEN}", chat_id: "{CHAT}", api_url: "{telegram.url}",'
        f" commands: true, allowed_user_ids: [{OWNER}]}}, events: {{started: false, stopping: false}}}}\n"
    )
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake, FeedEmulator(api_keys={KEY}) as emu:
        cfg = make_config(emu, fake, tmp_path, dry_run=True, top=top)
        with capture_logs() as logs:
            r = Running(Daemon(cfg))
            await r.armed()
            telegram.say("/status", user_id=OWNER, chat_id=CHAT)
            telegram.say("/positions", user_id=OWNER, chat_id=CHAT)
            telegram.say("/halt", user_id=OWNER, chat_id=CHAT)
            telegram.say("/reload", user_id=OWNER, chat_id=CHAT)
            sent = [await telegram.sent_starting(f"/{c}") for c in ("status", "positions", "halt", "reload")]
            await r.until(lambda: "operator_halt" in r.daemon.gate.reasons)
            await r.stop()
        assert sent[0]["text"].startswith("/status: PAPER, armed; feed connected; 0 open positions")
        assert sent[1]["text"] == "/positions: no open positions"
        assert sent[2]["text"].startswith("/halt: halted: no new entries")
        assert "not available" not in sent[3]["text"]  # the daemon's own reload answered it
        assert all(TOKEN not in str(e) for e in logs)

        r = Running(Daemon(cfg))  # a restart: the halt is restored from the state_dir
        await r.until(lambda: "operator_halt" in r.daemon.gate.reasons and r.daemon.ready.is_set())
        assert not r.daemon.gate.armed
        telegram.say("/resume", user_id=OWNER, chat_id=CHAT)
        await r.armed()
        resumed = await telegram.sent_starting("/resume")  # alerts share the chat: find the answer
        await r.stop()
    assert resumed["text"] == "/resume: resumed: new entries allowed again"
