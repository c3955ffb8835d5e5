"""The journal's side of a pair: each intent records the lease (fencing token) it was sent under, and a
fence that refuses (the lease cannot be proven) leaves nothing recorded, so nothing is sent."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge.errors import TradingHalted
from bridge.trading import journal_schema
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent


def intent(cid: str) -> OrderIntent:
    return OrderIntent(cid, "k1", "s", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, False)


def test_intent_records_its_lease_and_a_refusing_fence_records_nothing(tmp_path: Path) -> None:
    """With a fence, the intent's row (and its intent-log line, replayed after kill -9) carries the
    lease id; without one (a single host) it is NULL; a fence that raises TradingHalted stops the
    reserve before anything is written."""
    journal = Journal.open(tmp_path, dry_run=False)
    journal.reserve(intent("single"))
    journal.fence = lambda: 7587
    journal.reserve(intent("paired"))

    def refuse() -> int:
        raise TradingHalted(frozenset({"ha_standby"}))

    journal.fence = refuse
    with pytest.raises(TradingHalted):
        journal.reserve(intent("refused"))
    journal.flush()
    rows = dict(journal.select("SELECT client_order_id, lease_id FROM orders"))
    assert rows == {"single": None, "paired": 7587}
    # The intent log (what a restart after kill -9 replays into SQLite) carries it too: last value.
    (log_file,) = tmp_path.glob("*.intents")
    lines = [orjson.loads(line) for line in log_file.read_bytes().splitlines()]
    assert [(row[0], row[-1]) for row in lines] == [("single", None), ("paired", 7587)]
    journal.close()


def test_lease_column_is_the_latest_step() -> None:
    """The schema step that adds orders.lease_id exists, and the steps stay consecutive."""
    versions = [m.version for m in journal_schema.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert any("lease_id" in m.doc for m in journal_schema.MIGRATIONS)
