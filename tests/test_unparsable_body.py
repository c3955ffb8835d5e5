"""An HTTP 200 whose body cannot be read as an order (cut short, `{}`, not JSON at all) is an unknown
outcome: looked up by client id, never a zero fill or a refusal; the order is sent once. Both order
paths: the Binance fast path and ccxt's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import OrderStatusUnknown
from bridge.sim.fake_exchange import FakeBinance
from bridge.sim.fake_venue import FaultKind
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.factories import announcement
from tests.test_exchange import config
from tests.test_orders import Rig, make_rig

UNREADABLE: list[FaultKind] = ["garbled_after", "empty_after", "not_json_after"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as server:
        yield server


@pytest.fixture
async def live(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(fake, tmp_path, dry_run=False)
    yield rig
    await rig.exchange.close()
    rig.journal.close()


@pytest.mark.parametrize("fault", UNREADABLE)
@pytest.mark.parametrize("ccxt_path", [False, True], ids=["fast-path", "ccxt"])
@pytest.mark.parametrize("limit", [None, 2.2], ids=["market", "limit-ioc"])
async def test_both_order_paths_raise_status_unknown(
    fake: FakeBinance, fault: FaultKind, ccxt_path: bool, limit: float | None
) -> None:
    """create_order on an unreadable 200 raises OrderStatusUnknown (never returns a result with
    filled 0 or None, never OrderRejected), on the fast path and on ccxt's, market and limit IOC."""
    ex = Exchange("binance", config(fake, enableRateLimit=ccxt_path), dry_run=False)
    await ex.start(check_keys=False)
    try:
        assert ex.fast_orders is not ccxt_path
        fake.fail_next_order(fault)
        size: dict[str, Any] = {"amount": 10.0, "limit_price": limit} if limit else {"cost": 20.0}
        with pytest.raises(OrderStatusUnknown):
            await ex.create_order(OrderRequest("ABC/USDT", "buy", "bxunread1", **size))
    finally:
        await ex.close()
    assert fake.count("POST", "/api/v3/order") == 1


@pytest.mark.parametrize("fault", UNREADABLE)
@pytest.mark.parametrize("capped", [False, True], ids=["market", "limit-ioc"])
async def test_unreadable_200_is_looked_up(live: Rig, fault: FaultKind, capped: bool) -> None:
    """The order executed but its answer is unreadable: `unknown` at once, the background look-up finds
    it `placed` with its fill, one order request in all."""
    live.fake.fail_next_order(fault)
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
