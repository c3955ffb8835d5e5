"""The one table that translates ccxt's exceptions into bridge.errors (with why an order was refused,
OrderRejected.kind), and the capture of the failed HTTP response behind an exception (its Retry-After,
the exchange's own error code).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import ccxt.async_support as ccxt_async
import orjson

from bridge import secrets
from bridge.errors import (
    ExchangeAuthError,
    ExchangeError,
    ExchangeUnavailable,
    OrderRejected,
    OrderStatusUnknown,
    RateLimited,
    RejectionKind,
    UnknownSymbol,
)
from bridge.retry import retry_after_header

Phase = Literal["order", "read"]

_DETAIL_MAX = 300

# First match wins, so subclasses come before their bases. Columns: ccxt class, during an order,
# during a read. Order-time choices follow one rule: only a definite refusal is OrderRejected;
# anything that may have reached the matching engine is OrderStatusUnknown.
_RULES: tuple[tuple[type[BaseException], type[ExchangeError], type[ExchangeError]], ...] = (
    (ccxt_async.RateLimitExceeded, RateLimited, RateLimited),
    (ccxt_async.DDoSProtection, RateLimited, RateLimited),
    # binance -1021: the timestamp was refused, so the order was not executed
    (ccxt_async.InvalidNonce, OrderRejected, ExchangeUnavailable),
    # "This symbol is not permitted for this account": refuses one order, not the whole key
    (ccxt_async.PermissionDenied, OrderRejected, ExchangeAuthError),
    (ccxt_async.AuthenticationError, ExchangeAuthError, ExchangeAuthError),
    (ccxt_async.BadSymbol, OrderRejected, UnknownSymbol),
    (ccxt_async.InsufficientFunds, OrderRejected, ExchangeError),
    (ccxt_async.InvalidOrder, OrderRejected, ExchangeError),
    (ccxt_async.BadRequest, OrderRejected, ExchangeError),  # binance -1013 min notional lands here
    (ccxt_async.OperationRejected, OrderRejected, ExchangeError),
    (ccxt_async.NotSupported, OrderRejected, ExchangeError),
    (ccxt_async.ArgumentsRequired, OrderRejected, ExchangeError),
    # timeouts, 5xx, dropped connections, maintenance, unparsable answers
    (ccxt_async.OperationFailed, OrderStatusUnknown, ExchangeUnavailable),
    # an unmapped exchange code or a broken response body: nobody knows what happened
    (ccxt_async.ExchangeError, OrderStatusUnknown, ExchangeUnavailable),
)

# Exchange codes that are definite refusals of an order although ccxt maps them to no class (so to
# ExchangeError, which would read as "status unknown").
_REFUSAL_CODES = frozenset(
    {
        "51169",  # okx: reduce-only order with no position in that direction to reduce
    }
)

# Why an order was refused: OrderRejected.kind. First match wins. Columns: ccxt class (None: any), the
# exchange's code (None: any), a fragment of the error text, lower case ("": any), the kind. ccxt's class
# decides where it is specific; where ccxt lumps refusals together (binance -2010 NEW_ORDER_REJECTED is
# any matching-engine refusal, -1013 any filter failure) the exchange's code and message decide. Binance
# answers a symbol that is not TRADING with "Market is closed." (-2010 per its docs, -1013 per ccxt's).
_REJECTION_KINDS: tuple[tuple[type[BaseException] | None, str | None, str, RejectionKind], ...] = (
    (ccxt_async.MarketClosed, None, "", "market_closed"),
    (None, None, "market is closed", "market_closed"),
    (None, None, "trading halted", "market_closed"),
    (ccxt_async.InsufficientFunds, None, "", "insufficient_balance"),
    (None, "-2010", "insufficient balance", "insufficient_balance"),
    (ccxt_async.BadSymbol, None, "", "unknown_symbol"),
    (None, "-1121", "", "unknown_symbol"),  # Invalid symbol.
    (None, "-1013", "notional", "too_small"),  # Filter failure: NOTIONAL, MIN_NOTIONAL
    (None, "-1013", "lot_size", "too_small"),  # Filter failure: LOT_SIZE, MARKET_LOT_SIZE
    (None, "-2010", "price * qty is zero or less", "too_small"),
    (None, "-4164", "", "too_small"),  # binance usd-m: notional below the symbol's minimum
    (None, "51020", "", "too_small"),  # okx: below the instrument's minimum size
    (None, "51121", "", "too_small"),  # okx: not a multiple of the lot size
    # gate: {"label":"INVALID_PARAM_VALUE","message":"Your order size 1 USDT is too small. The minimum is 3 USDT"}
    (None, "INVALID_PARAM_VALUE", "too small", "too_small"),
    (None, "170121", "", "unknown_symbol"),  # bybit spot: Invalid symbol. (ccxt: InvalidOrder)
    (None, "10001", "symbol invalid", "unknown_symbol"),  # bybit linear: params error: symbol invalid
    (None, "170140", "", "too_small"),  # bybit spot: Order value exceeded lower limit.
    (None, "170136", "", "too_small"),  # bybit spot: Order quantity lower than the minimum.
    (None, "110094", "", "too_small"),  # bybit linear: Order does not meet minimum order value
    # ccxt's own check before sending: the amount rounds to nothing on the market's lot
    (ccxt_async.InvalidOrder, None, "must be greater than minimum amount precision", "too_small"),
)


def translate_error(
    exc: BaseException,
    *,
    exchange: str,
    during: Phase,
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
) -> ExchangeError:
    """Map any exception raised by a ccxt call to the project's tree (an ExchangeError passes as is).
    `headers` and `body` are those of the failed HTTP response, if there was one: for Retry-After, and
    for the exchange's code when ccxt matched the message and dropped it. Anything unknown raised
    during an order counts as status unknown: it may have happened after the request left."""
    if isinstance(exc, ExchangeError):
        return exc
    target: type[ExchangeError] = OrderStatusUnknown if during == "order" else ExchangeUnavailable
    for ccxt_class, on_order, on_read in _RULES:
        if isinstance(exc, ccxt_class):
            target = on_order if during == "order" else on_read
            break
    text = str(exc)
    code, msg = _parse_error_body(text)
    if code is None and body:
        code = _parse_error_body(body)[0]
    if during == "order" and code in _REFUSAL_CODES:
        target = OrderRejected
    message = f"{exchange}: {type(exc).__name__}: {_clean(msg or text) or 'no detail'}"
    if target is OrderRejected:
        kind = rejection_kind(exc, code, f"{text} {body or ''}")
        return OrderRejected(message, exchange=exchange, code=code, kind=kind)
    if target is RateLimited:
        return RateLimited(message, exchange=exchange, code=code, retry_after=retry_after_header(headers))
    return target(message, exchange=exchange, code=code)


def rejection_kind(exc: BaseException, code: str | None, text: str) -> RejectionKind:
    """Why an order was refused, by _REJECTION_KINDS: from the ccxt class of `exc`, the exchange's
    `code` and the error `text` (ccxt's message, the response body)."""
    lowered = text.lower()
    for ccxt_class, wanted_code, fragment, kind in _REJECTION_KINDS:
        if (
            (ccxt_class is None or isinstance(exc, ccxt_class))
            and (wanted_code is None or wanted_code == code)
            and fragment in lowered
        ):
            return kind
    return "other"


def _parse_error_body(text: str) -> tuple[str | None, str | None]:
    """The exchange's own code and message from a JSON error body, alone or inside ccxt's text
    ("binance {"code":-2010,"msg":...}"); (None, None) if there is none."""
    start, end = text.find("{"), text.rfind("}")
    if not 0 <= start < end:
        return None, None
    try:
        body = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = next((body[k] for k in ("code", "retCode", "label") if body.get(k) is not None), None)
    msg = next((body[k] for k in ("msg", "retMsg", "message") if body.get(k)), None)
    # okx: an order-level refusal is {"code": "1", "data": [{"sCode": "51008", "sMsg": ...}]}
    first = body["data"][0] if isinstance(body.get("data"), list) and body["data"] else None
    if isinstance(first, dict) and first.get("sCode") not in (None, "", "0"):
        code, msg = first["sCode"], first.get("sMsg") or msg
    return (None if code is None else str(code)), (None if msg is None else str(msg))


def _clean(text: str) -> str:
    text = re.sub(r"(https?://[^\s?]+)\?\S*", r"\1", text)
    return secrets.scrub(text)[:_DETAIL_MAX]


def describe(exc: BaseException) -> str:
    """A log-safe one-liner for an exception (no URL queries, no secrets)."""
    text = str(exc)
    return f"{type(exc).__name__}: {_clean(_parse_error_body(text)[1] or text)}"


# ----- the failed response behind an exception -----


@dataclass(frozen=True)
class _FailedResponse:
    headers: Mapping[str, str]
    body: str | None  # only a failed (HTTP >= 400) response's


# The latest failed HTTP response of a ccxt call in the current task. ccxt's own last_response_*
# attributes are per instance, so with concurrent calls one would read another call's headers.
_failed_response: ContextVar[_FailedResponse | None] = ContextVar("bridge_failed_response", default=None)


def note_response(code: int, headers: Any, body: Any) -> None:
    """Note a ccxt request's HTTP response in the task's context: its headers always (Bybit refuses a
    rate-limited request with HTTP 200 and says when to come back in a header), its body if it failed."""
    _failed_response.set(_FailedResponse(headers, body if code >= 400 else None))


@contextlib.contextmanager
def translated(exchange: str, during: Phase) -> Iterator[None]:
    """Whatever a ccxt call raises leaves as an ExchangeError: ccxt types and their messages (URLs
    with signatures) never escape, not even as __cause__."""
    _failed_response.set(None)
    try:
        yield
    except ExchangeError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure must become a project error (see _RULES)
        raise _translate(exc, exchange, during) from None


def _translate(exc: BaseException, exchange: str, during: Phase) -> ExchangeError:
    failed = _failed_response.get()
    if failed is None:
        return translate_error(exc, exchange=exchange, during=during)
    return translate_error(exc, exchange=exchange, during=during, headers=failed.headers, body=failed.body)
