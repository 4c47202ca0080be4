"""Errors of the trading core. Messages never contain secrets (DEVELOPERS.md)."""

from __future__ import annotations

from decimal import Decimal


class OptiFlowError(Exception):
    """Base of every error the core raises on purpose; its text is fit to show a trader."""


class DataError(OptiFlowError):
    """Bundled or fetched market data is missing or malformed."""


class MissingData(DataError):
    """A market data file is not there at all (a profile written for live may list symbols
    without bundled candles: such a symbol may be skipped, with a warning)."""


class BadData(DataError):
    """A market data file is there but cannot be used as it is: truncated or not gzip, a row
    with too few fields, timestamps out of order or repeated. Never skipped silently: the run
    stops naming the file and the line."""


class ConfigError(OptiFlowError):
    """A configuration value is invalid; the message names the field."""


class PrecisionError(OptiFlowError):
    """An order violates exchange precision or limits after rounding (SPEC O-1, F-5).

    Attributes: symbol (ccxt unified), what ("amount", "notional", …), value and limit in the
    field's unit (contracts or quote).
    """

    def __init__(self, symbol: str, what: str, value: Decimal, limit: Decimal) -> None:
        self.symbol, self.what, self.value, self.limit = symbol, what, value, limit
        super().__init__(f"{symbol}: {what} {value} is below the exchange limit {limit}")


class ExchangeError(OptiFlowError):
    """The exchange rejected or failed a request; ``reason`` is the exchange's own text."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OrderRejected(ExchangeError):
    """A business rejection (insufficient margin, invalid order): never retried (SPEC O-4)."""


class UnknownSymbol(OptiFlowError):
    """A symbol that is not configured or not listed on the exchange."""


class ExchangeUnavailable(ExchangeError):
    """A transient failure (network error, HTTP 5xx, timeout): the request may be retried, but an
    order's fate is unknown until it is looked up by client order id (SPEC O-2, O-4)."""


class RequestTimedOut(ExchangeUnavailable):
    """The exchange did not answer in time; an order may still have been accepted (SPEC O-2)."""


class RateLimited(ExchangeError):
    """HTTP 429 / 418 (ccxt RateLimitExceeded, DDoSProtection); ``retry_after_s`` is the
    exchange's Retry-After in seconds (SPEC O-4)."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class TimestampOutOfSync(ExchangeError):
    """Binance -1021: the request timestamp is outside recvWindow; resync the clock and retry
    (SPEC O-4)."""


class OrderNotFound(ExchangeError):
    """The exchange does not know this order (Binance -2011 / -2013)."""


class DuplicateClientOrderId(OrderRejected):
    """Binance -4116: an order with this client order id already exists (SPEC O-2)."""


class AuthenticationFailed(ExchangeError):
    """Keys missing, invalid or without permission (the message never contains the key)."""
