"""Exits-only mode: the feed cannot come back (its key is dead), but open positions still need their
exits, which need no feed. The daemon keeps its exit manager running until they are closed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.daemon import Daemon

log = structlog.get_logger(__name__)


async def run_exits_only(daemon: Daemon, error: BridgeError) -> None:
    """With positions open, keep the exit manager running until it finds none (`exits.flat`) or a stop
    is requested; the feed is not reconnected and entries stay halted ("disconnected", and
    "key_rejected" for a 403)."""
    assert daemon.journal is not None
    # An entry already past the gate may still be filling: let it land before counting positions.
    await daemon._drain_runners()
    try:
        positions = daemon.journal.open_positions()
    except Exception:  # an unreadable journal: stop as the feed said; the positions stay journaled
        log.exception("daemon.open_positions_failed")
        return
    exits_task = next((t for t in daemon._tasks if t.get_name() == "exits"), None)
    if not positions or daemon.exits is None or exits_task is None or daemon._stop.is_set():
        return
    daemon.mode = "exits_only"
    names = [f"{p.symbol} on {p.exchange}" for p in positions]
    log.warning(
        "daemon.exits_only",
        reason=str(error),
        exit_code=int(error.exit_code),
        open_positions=len(positions),
        positions=names,
    )
    daemon.notifier.exits_only(reason=str(error), positions=names)
    daemon._report_status()
    flat = daemon.exits.flat
    flat.clear()  # set by a pass before these positions were counted: only a pass from now counts
    flat_wait = asyncio.create_task(flat.wait(), name="exits-flat")
    stop_wait = asyncio.create_task(daemon._stop.wait(), name="exits-only-stop")
    try:
        await asyncio.wait({flat_wait, stop_wait, exits_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        flat_wait.cancel()
        stop_wait.cancel()
    if daemon._fatal is not None:
        outcome = "fatal"  # e.g. every venue's key rejected too: main_loop raises that
    elif daemon._stop.is_set():
        outcome = "stop_requested"
    elif flat.is_set():
        outcome = "flat"
    else:
        outcome = "exit_manager_ended"  # nothing watches the positions any more: stop as the feed said
    log.info("daemon.exits_only_ended", outcome=outcome, exit_code=int(error.exit_code))
