"""An HTTP 200 whose body cannot be read as an order (cut short, or `{}`) is an unknown outcome: looked
up by client id, never a zero fill or a refusal; the order is sent once. Both order paths: the Binance
fast path (market orders) and ccxt's own (limit IOC orders)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim.fake_exchange import FakeBinance
from tests.factories import announcement
from tests.test_orders import Rig, make_rig


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Rig]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake:
        rig = await make_rig(fake, tmp_path, dry_run=False)
        yield rig
        await rig.exchange.close()
        rig.journal.close()


@pytest.mark.parametrize("fault", ["garbled_after", "empty_after"])
@pytest.mark.parametrize("capped", [False, True], ids=["fast-path-market", "ccxt-limit-ioc"])
async def test_unreadable_200_is_looked_up(live: Rig, fault: str, capped: bool) -> None:
    """The order executed but its answer is unreadable: `unknown` at once, the background look-up finds
    it `placed` with its fill, one order request in all."""
    live.fake.fail_next_order(fault)  # type: ignore[arg-type]
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
        max_slippage=0.05 if capped else None,
    )
    assert outcome.status == "unknown", outcome
    await live.router.settled()
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.state == "placed" and (record.filled or 0) > 0
    assert live.fake.count("POST", "/api/v3/order") == 1
