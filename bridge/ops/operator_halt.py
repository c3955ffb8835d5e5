"""The operator's halt: no new entries until a person lifts it (`/halt` from Telegram or `bridge halt`,
then `/resume` or `bridge resume operator_halt`). Exits go on. It survives restarts: a small file in the
state_dir, one per mode (a paper and a live daemon may share a state_dir), written before the gate is
told so a crash in between never loses it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import structlog

from bridge.trading.gate import TradingGate

log = structlog.get_logger(__name__)

FILE_NAMES = {True: "operator-halt-paper.json", False: "operator-halt-live.json"}


class OperatorHalt:
    def __init__(self, state_dir: Path, gate: TradingGate, *, dry_run: bool) -> None:
        self.path = state_dir / FILE_NAMES[dry_run]
        self._gate = gate

    @property
    def active(self) -> bool:
        return self.path.exists()

    def restore(self) -> bool:
        """At start: halt again if a halt was left in force by an earlier run. True if it was."""
        if not self.path.exists():
            return False
        try:
            details = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            details = {}  # unreadable: still a halt (a person asked for it; only a person lifts it)
        self._gate.halt("operator_halt")
        log.warning("trading.operator_halt_restored", **_fields(details))
        return True

    def halt(self, by: str) -> str:
        """Set the halt (persisted first); the answer for the person who asked."""
        if self.active:
            return "already halted: no new entries (exits go on)"
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"by": by, "at": int(time.time())}))
        os.replace(tmp, self.path)
        self._gate.halt("operator_halt")
        log.warning("trading.operator_halt", by=by)
        return "halted: no new entries until /resume (exits go on; kept across restarts)"

    def resume(self, by: str) -> str:
        was = self.active
        self.path.unlink(missing_ok=True)
        self._gate.resume("operator_halt")
        log.warning("trading.operator_halt_lifted", by=by, was_halted=was)
        return "resumed: new entries allowed again" if was else "was not halted by an operator"


def _fields(details: object) -> dict[str, object]:
    if not isinstance(details, dict):
        return {}
    return {"by": str(details.get("by")), "since": details.get("at")}
