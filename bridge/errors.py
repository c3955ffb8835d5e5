"""The project's exception tree and the process exit codes it maps to.

Each class says who handles it and how. ccxt's own exceptions never leave bridge.venues: the one
table in bridge.venues.errors translates them into the ExchangeError branch below.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

# Why the exchange refused an order, as far as the exits code needs to tell (set on OrderRejected by the
# one translation table in bridge.venues.errors): no coins or quote left to trade, below the market's
# minimum size or notional, the market is not trading, the symbol is not listed; "other" for the rest.
RejectionKind = Literal["insufficient_balance", "too_small", "market_closed", "unknown_symbol", "other"]


class ExitCode(IntEnum):
    """Process exit codes (documented in the README; systemd's RestartPreventExitStatus uses 77 78)."""

    OK = 0
    FAILURE = 1
    CREDENTIALS = 77  # EX_NOPERM: a key was rejected; a restart cannot help, a new key is needed
    CONFIG = 78  # EX_CONFIG: the configuration is wrong; a restart cannot help


class BridgeError(Exception):
    """Base of every error bridge raises on purpose. Caught by the CLI, which exits with `exit_code`."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(BridgeError):
    """The configuration (file, variable, strategy params) is wrong. Fatal: the CLI prints the one-line
    message and exits 78, without a traceback."""

    exit_code = ExitCode.CONFIG


class CredentialsRejected(BridgeError):
    """A key was rejected (feed 403, key_expired close, exchange auth failure). Fatal: halt trading and
    exit 77; retrying in a loop only burns rate limits."""

    exit_code = ExitCode.CREDENTIALS


class TradingHalted(BridgeError):
    """Raised by the trading gate when an order is attempted while trading is halted. The order path
    catches it and logs `order.skipped`; it never stops the daemon."""

    def __init__(self, reasons: frozenset[str]) -> None:
        super().__init__("trading is halted: " + ", ".join(sorted(reasons)))
        self.reasons = reasons


class ExchangeError(BridgeError):
    """Something went wrong talking to an exchange. `retryable` says whether sending the same request
    again is safe; order placement never retries blindly whatever it says."""

    retryable: bool = False

    def __init__(self, message: str, *, exchange: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.exchange = exchange
        self.code = code


class OrderRejected(ExchangeError):
    """The exchange answered and refused the order (balance, min notional, bad symbol, precision).
    Final for this order: log `order.rejected`, do not retry. `kind` says why, for the caller that
    corrects and sends another order (see RejectionKind)."""

    def __init__(
        self,
        message: str,
        *,
        exchange: str = "",
        code: str | None = None,
        kind: RejectionKind = "other",
    ) -> None:
        super().__init__(message, exchange=exchange, code=code)
        self.kind: RejectionKind = kind


class ExchangeAuthError(ExchangeError):
    """The exchange rejected the API key or signature. Fatal at start-up (exit 77); during trading it
    halts trading."""

    exit_code = ExitCode.CREDENTIALS


class OrderStatusUnknown(ExchangeError):
    """The request may or may not have reached the exchange (timeout, 5xx, dropped connection).
    Never resend: look the order up by its client id first."""


class ExchangeUnavailable(ExchangeError):
    """A read-only request failed for a transient reason (network, 5xx, maintenance). Safe to retry
    with backoff."""

    retryable = True


class RateLimited(ExchangeUnavailable):
    """The exchange asked us to slow down (HTTP 429/418). Retry only after `retry_after` seconds."""

    def __init__(
        self,
        message: str,
        *,
        exchange: str = "",
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, exchange=exchange, code=code)
        self.retry_after = retry_after


class UnknownSymbol(ExchangeError):
    """The symbol is not listed on the exchange, even after a targeted market refresh. Skip it."""
