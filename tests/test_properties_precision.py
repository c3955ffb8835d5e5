"""Property tests for bridge's own TICK_SIZE rounding and the fast path's query string: for any value and
tick, the same text and numbers as ccxt's decimal_to_precision and urlencode, which they replace on the
order path (a difference would send a price off the venue's tick, or a signature over other bytes)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import ccxt.async_support as ccxt_async
from ccxt.base.decimal_to_precision import NO_PADDING, ROUND, TICK_SIZE, TRUNCATE, decimal_to_precision
from hypothesis import given
from hypothesis import strategies as st

from bridge.venues import fastpath, precision

# Ticks as venues publish them: strings ("0.00010000"), floats, whole numbers, odd steps (0.0025, 5).
_tick_numbers = st.sampled_from(
    [1e-8, 1e-5, 3e-5, 0.0001, 0.0025, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 100.0]
)
ticks = (
    _tick_numbers
    | _tick_numbers.map(lambda t: f"{t:.8f}")
    | st.sampled_from([1, 5, 10, 1000, "1", "10", "1e-05"])
)
values = (
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e6, max_value=0, allow_nan=False, allow_infinity=False)
    | st.decimals(min_value=0, max_value=10**6, places=8, allow_nan=False).map(float)
)


@given(values, ticks)
def test_tick_text_is_ccxts_text(value: float, tick: float | str) -> None:
    step = precision.tick_of(tick)
    assert step is not None
    for mode, half_up in ((TRUNCATE, False), (ROUND, True)):
        theirs = decimal_to_precision(value, mode, tick, TICK_SIZE, NO_PADDING)
        assert precision.tick_text(value, step, half_up=half_up) == theirs


@given(values.filter(lambda v: v > 0), ticks, st.booleans())
def test_rounded_is_ccxts_number(value: float, tick: float | str, up: bool) -> None:
    """The grid bridge sizes and caps orders on: ccxt's truncation (and one step above for `up`)."""
    in_tick_mode = SimpleNamespace(precisionMode=TICK_SIZE, decimal_to_precision=decimal_to_precision)
    ours = precision._rounded(in_tick_mode, Decimal(str(value)), tick, up=up)
    down = Decimal(decimal_to_precision(format(Decimal(str(value)), "f"), TRUNCATE, tick, TICK_SIZE))
    expected = down if not up or down >= Decimal(str(value)) else down + Decimal(str(float(tick)))
    assert ours == expected


def test_not_a_tick_goes_to_ccxt() -> None:
    for bad in (0, -0.01, "abc", float("nan"), float("inf"), None, True, [0.01]):
        assert precision.tick_of(bad) is None


_keys = st.sampled_from(["symbol", "side", "type", "quantity", "price", "newClientOrderId", "a b", "x/y"])
_values = st.integers(min_value=0, max_value=2**63) | st.booleans() | st.floats(allow_nan=False) | st.text()


@given(st.dictionaries(_keys, _values, max_size=8))
def test_query_is_ccxts_urlencode(params: dict[str, object]) -> None:
    ex = SimpleNamespace(urlencode=ccxt_async.Exchange.urlencode)  # ccxt's own, a static method
    assert fastpath.query(ex, params) == ex.urlencode(params)
