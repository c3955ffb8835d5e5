"""What a person can do to a running daemon from outside it: the control socket's commands (`bridge close`,
`bridge resume`, `bridge halt`) and the same from a phone (Telegram: /status, /positions, /halt,
/resume, /close, /reload), built here from the daemon's parts so both paths do exactly the same thing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.config import Config
from bridge.ops.control import Handler as ControlHandler
from bridge.ops.operator_halt import OperatorHalt
from bridge.ops.positions_report import describe_plan
from bridge.ops.telegram_commands import Command, TelegramCommands
from bridge.system import TradingSystem, control_handlers
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal

MAX_LISTED = 20  # positions listed in one /positions answer


@dataclass
class Operator:
    """The daemon's operator side: the halt a person set (restored at start), the control socket's
    handlers, and the Telegram poller when `alerts.telegram.commands` is on."""

    halt: OperatorHalt
    controls: dict[str, ControlHandler]
    phone: TelegramCommands | None

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        if self.phone is None:
            return []
        return [asyncio.create_task(self.phone.run(stop), name="telegram-commands")]


def operator(
    cfg: Config,
    gate: TradingGate,
    system: TradingSystem,
    journal: Journal,
    snapshot: Callable[[], dict[str, Any]],
    reload: Callable[[], Awaitable[str]] | None = None,
) -> Operator:
    halt = OperatorHalt(cfg.state_dir, gate, dry_run=cfg.trading.dry_run)
    halt.restore()
    controls = control_table(system, halt)
    tg = cfg.alerts.telegram
    phone = None
    if tg is not None and tg.commands:
        table = telegram_table(
            controls=controls, snapshot=snapshot, journal=journal, reload=reload, dry_run=cfg.trading.dry_run
        )
        phone = TelegramCommands(tg, table, now=time.time)
    return Operator(halt, controls, phone)


def control_table(system: TradingSystem, halt: OperatorHalt) -> dict[str, ControlHandler]:
    """The control socket's handlers: the system's (close, resume loss_limit), plus the operator halt
    (`halt`, `resume` with reason operator_halt)."""
    handlers = control_handlers(system)
    resume_loss_limit = handlers["resume"]

    async def halt_now(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message": halt.halt(by=str(request.get("by") or "control socket"))}

    async def resume(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("reason") == "operator_halt":
            return {"ok": True, "message": halt.resume(by=str(request.get("by") or "control socket"))}
        return await resume_loss_limit(request)

    return {**handlers, "halt": halt_now, "resume": resume}


def telegram_table(
    *,
    controls: dict[str, ControlHandler],
    snapshot: Callable[[], dict[str, Any]],
    journal: Journal,
    reload: Callable[[], Awaitable[str]] | None,
    dry_run: bool,
) -> dict[str, Command]:
    """The Telegram commands, each answering in one short text."""

    async def ask(request: dict[str, Any]) -> str:
        answer = await controls[request["cmd"]](request)
        return str(answer.get("message") if answer.get("ok") else f"refused: {answer.get('error')}")

    async def status(_: list[str]) -> str:
        return status_text(snapshot(), open_positions=len(journal.open_positions()), dry_run=dry_run)

    async def positions(_: list[str]) -> str:
        found = journal.open_positions()
        if not found:
            return "no open positions"
        now_ns = time.time_ns()
        lines = [
            f"{p.symbol} on {p.exchange}: {p.remaining:g} held, entry {p.average or '?'}; "
            f"{describe_plan(p, now_ns=now_ns)}"
            for p in found[:MAX_LISTED]
        ]
        more = len(found) - MAX_LISTED
        return "\n".join(lines + ([f"... and {more} more (bridge positions)"] if more > 0 else []))

    async def halt(args: list[str]) -> str:
        return await ask({"cmd": "halt", "by": "telegram"})

    async def resume(args: list[str]) -> str:
        reason = args[0] if args else "operator_halt"
        return await ask({"cmd": "resume", "reason": reason, "by": "telegram"})

    async def close(args: list[str]) -> str:
        if not args or len(args) > 2:
            return "usage: /close SYMBOL [EXCHANGE], e.g. /close ABC/USDT binance"
        return await ask(
            {"cmd": "close", "symbol": args[0].upper(), "exchange": args[1] if len(args) > 1 else None}
        )

    async def reload_now(_: list[str]) -> str:
        if reload is None:
            return "reload is not available in this version: restart the service instead"
        return await reload()

    return {
        "status": status,
        "positions": positions,
        "halt": halt,
        "resume": resume,
        "close": close,
        "reload": reload_now,
    }


def status_text(snap: dict[str, Any], *, open_positions: int, dry_run: bool) -> str:
    """e.g. `LIVE, armed; feed connected; 2 open positions; up 3h12m`."""
    trading = snap.get("trading") or {}
    reasons = trading.get("halt_reasons") or []
    armed = "armed" if trading.get("armed") else f"halted ({', '.join(reasons) or 'starting'})"
    feed = (snap.get("feed") or {}).get("state") or "unknown"
    uptime = int(snap.get("uptime_s") or 0)
    mode = "PAPER" if dry_run else "LIVE"
    extra = f", {snap['mode']}" if snap.get("mode") not in (None, "normal") else ""
    plural = "" if open_positions == 1 else "s"
    return (
        f"{mode}{extra}, {armed}; feed {feed}; {open_positions} open position{plural}; "
        f"up {uptime // 3600}h{uptime % 3600 // 60:02d}m"
    )
