"""Errors of the trading core. Messages never contain secrets (DEVELOPERS.md)."""

from __future__ import annotations

from decimal import Decimal


class OptiFlowError(Exception):
    """Base of every error the core raises on purpose; its text is fit to show a trader."""


class DataError(OptiFlowError):
    """Bundled or fetched market data is missing or malformed."""


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
