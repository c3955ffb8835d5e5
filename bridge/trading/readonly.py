"""What `ctx.exchange(id)` hands a strategy: a read-only view of the exchange's ccxt object.

Market data, balances and order lookups pass through; everything else (create_order, cancel_order,
raw endpoints such as private_* and sapi_*, the credentials, the session) raises PermissionError:
orders go through ctx.buy / ctx.sell, behind the trading gate, the risk limits and the journal.

The view forwards an explicit allow-list, so a ccxt upgrade that adds a method adds nothing here. It
wraps whatever object it is given and imports no ccxt (trading may not). It keeps plugins from
sending orders by mistake or by shortcut; it is not a sandbox against code set on defeating it
(plugins run in the daemon's process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Plain data: which markets exist, their precision and limits, what the exchange supports.
READ_ATTRIBUTES = frozenset({"id", "name", "markets", "symbols", "currencies", "timeframes", "has"})

# Methods that read: the cached markets (no I/O), public market data, and the account's balances,
# positions, orders and trades (signed requests, but none changes anything).
READ_METHODS = frozenset(
    {
        "market",
        "currency",
        "amount_to_precision",
        "price_to_precision",
        "cost_to_precision",
        "fetch_time",
        "fetch_status",
        "fetch_ticker",
        "fetch_tickers",
        "fetch_order_book",
        "fetch_ohlcv",
        "fetch_trades",
        "fetch_bids_asks",
        "fetch_trading_fee",
        "fetch_trading_fees",
        "fetch_balance",
        "fetch_order",
        "fetch_orders",
        "fetch_open_orders",
        "fetch_closed_orders",
        "fetch_my_trades",
        "fetch_positions",
    }
)

ALLOWED = READ_ATTRIBUTES | READ_METHODS

# Named in the refusal, so a plugin author sees at once why; refused like anything off the list.
CREDENTIALS = frozenset(
    {"apiKey", "secret", "password", "uid", "login", "privateKey", "walletAddress", "token", "twofa"}
)


# What would hand out the view's own state, the ccxt object among it.
_STATE = frozenset({"__getstate__", "__reduce__", "__reduce_ex__"})


class ReadOnlyExchange:
    """A read-only view of one exchange's ccxt object (see the module docstring). Reading an allowed
    attribute or calling an allowed method behaves as on ccxt (async methods are awaited as usual;
    errors are ccxt's own, untranslated); anything else raises PermissionError."""

    __slots__ = ("_exchange_id", "_target")

    def __init__(self, target: Any, exchange_id: str) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_exchange_id", exchange_id)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name not in _STATE:
            return object.__getattribute__(self, name)  # the view's own protocol (class, repr, dir)
        exchange_id: str = object.__getattribute__(self, "_exchange_id")
        if name not in ALLOWED:
            raise PermissionError(_refusal(exchange_id, name))
        target = object.__getattribute__(self, "_target")
        if target is None:
            raise AttributeError(
                f"ctx.exchange({exchange_id!r}).{name}: this exchange has no ccxt object (replay and "
                "in-memory exchanges); use ctx.market, ctx.price, ctx.buy and ctx.sell"
            )
        value = getattr(target, name)
        if name in READ_METHODS:
            return _forward(value, name)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        raise PermissionError(_refusal(object.__getattribute__(self, "_exchange_id"), name, write=True))

    def __delattr__(self, name: str) -> None:
        raise PermissionError(_refusal(object.__getattribute__(self, "_exchange_id"), name, write=True))

    def __dir__(self) -> list[str]:
        return sorted(ALLOWED)

    def __repr__(self) -> str:
        exchange_id = object.__getattribute__(self, "_exchange_id")
        return f"<ReadOnlyExchange {exchange_id}: market data and lookups; orders through ctx.buy / ctx.sell>"

    def __reduce_ex__(self, protocol: object) -> Any:
        raise PermissionError("a read-only exchange view cannot be pickled or copied")


def _forward(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """The bound method behind a plain function: the view never hands out the method itself, whose
    `__self__` is the ccxt object."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = getattr(method, "__doc__", None)
    return call


def _refusal(exchange_id: str, name: str, *, write: bool = False) -> str:
    where = f"ctx.exchange({exchange_id!r}).{name}"
    if name in CREDENTIALS:
        why = "the exchange's credentials are never handed to strategies"
    elif write:
        why = "the exchange object is read-only"
    else:
        why = "not on the read-only allow-list (market data, balances, order lookups)"
    return (
        f"{where}: {why}. Place orders with ctx.buy / ctx.sell: they pass the trading gate, the risk "
        "limits and the journal"
    )
