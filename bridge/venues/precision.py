"""The terms of a limit order from a price cap: its price on the market's tick, never past the cap (down
for a buy, up for a sell's floor), and its size on the market's lot, never more than asked; None below
the market's minimums; and any one price or size on the market's grid (`on_grid`). Rounded by ccxt's
own `decimal_to_precision` in the market's precision mode (TICK_SIZE on binance: the precision is the
tick itself), so the order's request, which ccxt's price_to_precision and amount_to_precision format,
carries exactly these numbers.

In TICK_SIZE mode (binance, bybit, okx, gate) the rounding is done here (`on_tick`, `tick_text`),
with the same arithmetic as ccxt's `decimal_to_precision` and the same results (a property test holds
them to ccxt's), without its argument checks, global-context changes and recursive formatting: on the
order path ccxt's two roundings took about 100 µs of a cold order path's ~800 (bench/latency.py's
internal time), this about a fifth of that. Other modes go through ccxt.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, Literal

from ccxt.base.decimal_to_precision import (
    DECIMAL_PLACES,
    NO_PADDING,
    SIGNIFICANT_DIGITS,
    TICK_SIZE,
    TRUNCATE,
)

from bridge.venues.types import Side


def limit_terms(
    ex: Any,
    market: dict[str, Any],
    side: Side,
    *,
    cap_price: float,
    amount: float | None = None,
    cost: float | None = None,
) -> tuple[float, float] | None:
    """(amount, limit price) of a limit order on `market` (ccxt's unified dict) of the ccxt instance `ex`:
    the price is `cap_price` rounded to the tick, down for a buy, up for a sell; the amount is `amount`,
    else `cost` / that price, truncated to the lot (a buy never spends more than `cost`); on a contract
    market the lot is whole contracts of `contract_size` and the amount returned is still base currency.
    None when the result is below the market's minimum amount, cost or price (or rounds to nothing)."""
    wanted = [v for v in (cap_price, amount, cost) if v is not None]
    if (amount is None and cost is None) or not all(math.isfinite(v) and v > 0 for v in wanted):
        raise ValueError(f"limit_terms needs a positive cap and size, got {cap_price=} {amount=} {cost=}")
    precision = market.get("precision") or {}
    price = _rounded(ex, Decimal(str(cap_price)), precision.get("price"), up=side == "sell")
    if price <= 0:
        return None
    if amount is not None:
        size = Decimal(str(amount))
    else:
        with localcontext() as ctx:  # rounding toward zero: the size never buys more than `cost`
            ctx.rounding = ROUND_FLOOR
            size = Decimal(str(cost)) / price
    per_contract = Decimal(str(contract_size(market)))
    lots = _rounded(ex, size / per_contract, precision.get("amount"), up=False)  # contracts on a swap
    size = lots * per_contract
    if size <= 0:
        return None
    limits = market.get("limits") or {}
    for floor, value in (("amount", lots), ("cost", size * price), ("price", price)):
        least = (limits.get(floor) or {}).get("min")
        if least is not None and value < Decimal(str(least)):
            return None
    return float(size), float(price)


def to_contracts(amount: float, per_contract: float) -> float:
    """`amount` of base currency in contracts of `per_contract`, by decimal division: 0.0006 BTC at
    0.0001 a contract is 6, not float's 5.999999999999999 that ccxt's truncation would make 5."""
    if per_contract == 1.0:
        return amount
    return float(Decimal(str(amount)) / Decimal(str(per_contract)))


def from_contracts(contracts: float, per_contract: float) -> float:
    """`contracts` of `per_contract` in base currency, by decimal multiplication (6 x 0.0001 = 0.0006)."""
    if per_contract == 1.0:
        return contracts
    return float(Decimal(str(contracts)) * Decimal(str(per_contract)))


def contract_size(market: dict[str, Any]) -> float:
    """Base currency per unit of ccxt's `amount` on `market`: a contract market's `contractSize` (Gate's
    BTC_USDT perpetual: 0.0001), 1 on spot. bridge counts sizes in base currency everywhere; only the
    request to ccxt and its answer are in contracts."""
    if market.get("contract") is not True:
        return 1.0
    try:
        size = float(market.get("contractSize") or 1.0)
    except (TypeError, ValueError):
        return 1.0
    return size if math.isfinite(size) and size > 0 else 1.0


def on_grid(
    ex: Any, market: dict[str, Any], value: float, field: Literal["price", "amount"], *, up: bool = False
) -> float:
    """`value` on the market's tick (`field` "price") or lot ("amount") of the ccxt instance `ex`:
    truncated, or rounded up when `up`; as is for a market without that precision."""
    digits = (market.get("precision") or {}).get(field)
    return float(_rounded(ex, Decimal(str(value)), digits, up=up))


_TICKS: dict[Any, Decimal | None] = {}
_MAX_TICKS = 4096  # distinct tick values seen (a venue has a few dozen); past it the memo starts over


def tick_of(digits: Any) -> Decimal | None:
    """A TICK_SIZE precision as ccxt reads it (a string through float, a number through str), or None
    when it is not a positive finite number (ccxt refuses those; callers then go through ccxt)."""
    if isinstance(digits, bool):  # before the memo: True is 1 to a dict
        return None
    try:
        return _TICKS[digits]
    except KeyError:
        pass
    except TypeError:  # unhashable: not a precision
        return None
    tick: Decimal | None
    try:
        number = float(digits) if isinstance(digits, str) else digits
        if not isinstance(number, int | float) or not math.isfinite(number):
            tick = None
        else:
            tick = Decimal(str(number))
            tick = tick if tick > 0 else None
    except (ValueError, ArithmeticError):
        tick = None
    if len(_TICKS) >= _MAX_TICKS:
        _TICKS.clear()
    _TICKS[digits] = tick
    return tick


def on_tick(value: Decimal, tick: Decimal, *, half_up: bool = False) -> Decimal:
    """`value` on a multiple of `tick`: toward zero, or with `half_up` to the nearest (halves away from
    zero), as ccxt's decimal_to_precision in TICK_SIZE mode (TRUNCATE, ROUND)."""
    missing = abs(value) % tick
    if not missing:
        return value
    if half_up and missing >= tick / 2:
        return value - missing + tick if value > 0 else value + missing - tick
    return value + missing if value < 0 else value - missing


def tick_text(value: float | str, tick: Decimal, *, half_up: bool = False) -> str:
    """`value` on `tick` as ccxt's price_to_precision (`half_up`) or amount_to_precision and
    cost_to_precision (truncated) write it in TICK_SIZE mode without padding: no trailing zeros."""
    text = format(on_tick(Decimal(str(value)), tick, half_up=half_up), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _rounded(ex: Any, value: Decimal, digits: Any, *, up: bool) -> Decimal:
    """`value` on the grid of a ccxt precision (`digits`: a tick, or a count of decimal places or
    significant digits, per `ex.precisionMode`), truncated, or rounded up when `up`. No precision:
    `value` as is."""
    if digits is None:
        return value
    mode = ex.precisionMode
    if mode == TICK_SIZE and (tick := tick_of(digits)) is not None:
        down = on_tick(value, tick)
        return down if not up or down >= value else down + tick
    down = Decimal(ex.decimal_to_precision(format(value, "f"), TRUNCATE, digits, mode, NO_PADDING))
    if not up or down >= value:
        return down
    # ccxt's decimal_to_precision knows only TRUNCATE and ROUND: one grid step above the truncation
    if mode == TICK_SIZE:
        step = Decimal(str(digits))
    elif mode == DECIMAL_PLACES:
        step = Decimal(1).scaleb(-int(digits))
    elif mode == SIGNIFICANT_DIGITS:
        step = Decimal(1).scaleb((down if down > 0 else value).adjusted() - int(digits) + 1)
    else:  # pragma: no cover - ccxt has no other precision mode
        raise ValueError(f"unknown ccxt precision mode {mode!r}")
    return down + step
