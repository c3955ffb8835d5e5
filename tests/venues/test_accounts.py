"""Accounts and venues: `exchanges:` entries are names, `venue:` picks the ccxt class (default: the name),
so two accounts on one venue both trade; each venue's dialect gives its client-id format."""

from __future__ import annotations

import pytest

from bridge.config import ExchangeConfig
from bridge.errors import ConfigError
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.venues.dialect import Dialect, dialect_for
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.test_exchange import FAST

BASE_ID = "01JABCDEFGHJKMNPQRSTVWXYZ0123456789"  # 35 alphanumerics, longer than most venues take


@pytest.mark.parametrize(
    ("venue", "expected"),
    [
        ("binance", BASE_ID[-35:]),
        ("binanceusdm", BASE_ID[-35:]),  # a subclass of binance: same rule
        ("bybit", BASE_ID[-35:]),
        ("okx", BASE_ID[-32:]),
        ("gate", "t-" + BASE_ID[-26:]),  # ccxt refuses over 28 with the prefix
        ("kraken", BASE_ID),  # no known rule: up to 64
    ],
)
def test_each_venue_formats_the_client_id_in_its_own_length(venue: str, expected: str) -> None:
    """The id keeps its tail (the random part) and fits the venue's limit; gate's starts with t-."""
    ex = Exchange("account", ExchangeConfig(venue=venue), dry_run=True)
    assert ex.venue == venue
    assert ex.format_client_order_id(BASE_ID) == expected
    prefix, limit = dialect_for(venue).client_id_prefix, dialect_for(venue).client_id_max
    assert expected.startswith(prefix) and len(expected) <= limit


def test_unknown_venue_is_a_config_error_naming_the_venue_key() -> None:
    """A typo in `venue:` is refused at start with the key that holds it, never a ccxt traceback."""
    ex = Exchange("main", ExchangeConfig(venue="bybitt"), dry_run=True)
    with pytest.raises(ConfigError, match=r"exchanges\.main\.venue: unknown exchange id 'bybitt'"):
        ex._create()


def test_an_unlisted_venue_gets_ccxts_unified_dialect() -> None:
    assert type(dialect_for("kraken")) is Dialect
    assert type(dialect_for("binanceus")).__name__ == "BinanceDialect"


async def test_two_accounts_on_one_venue_both_trade() -> None:
    """`main` and `sub`, both `venue: binance`: each starts its own ccxt binance and orders reach the
    venue under each account's client id."""
    async with FakeBinance() as fake:
        accounts = {
            name: Exchange(
                name,
                ExchangeConfig(
                    venue="binance",
                    api_key=Secret(fake.api_key),
                    secret=Secret(fake.secret),
                    ccxt={**fake.ccxt_config(), **FAST},
                ),
                dry_run=False,
            )
            for name in ("main", "sub")
        }
        try:
            for account in accounts.values():
                await account.start(check_keys=True)
            for name, account in accounts.items():
                result = await account.create_order(OrderRequest("BTC/USDT", "buy", f"{name}01", cost=20))
                assert result.exchange == name and result.status == "closed"
        finally:
            for account in accounts.values():
                await account.close()
        assert [o.params["newClientOrderId"] for o in fake.orders] == ["main01", "sub01"]
