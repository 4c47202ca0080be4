"""Ports of the trading core (STYLE: ports and adapters). The engine talks to an exchange and a
clock only through these; the simulated exchange and the ccxt adapter implement the same port."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from trading.domain.models import Market, Order


class Clock(Protocol):
    """Time source: ``now_ms()`` in epoch ms UTC. Replay and tests drive it; live uses the wall."""

    def now_ms(self) -> int:
        """Current time, epoch ms UTC."""


class ReplayClock:
    """A clock set by the replay feed to the close time of the candle being processed."""

    __slots__ = ("current_ms",)

    def __init__(self, start_ms: int = 0) -> None:
        self.current_ms = start_ms

    def now_ms(self) -> int:
        """The replay time, epoch ms UTC."""
        return self.current_ms


class ExchangePort(Protocol):
    """What the engine needs from an exchange (Binance USDⓈ-M semantics, one-way mode).

    Amounts in contracts, prices in quote, balance in quote. Errors: ``trading.domain.errors.OrderRejected``
    for business rejections (never retried), ``trading.domain.errors.ExchangeError`` otherwise.
    """

    async def load_markets(self) -> dict[str, Market]:
        """Market rules per ccxt unified symbol."""

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """Set the leverage used for new positions on ``symbol``."""

    async def fetch_balance(self) -> Decimal:
        """Wallet balance (realised) in quote."""

    async def create_order(self, order: Order) -> Order:
        """Place ``order`` (its client order id makes retries idempotent, SPEC O-2); returns the
        order as accepted (status open, or closed if it filled at once)."""

    async def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        """Cancel an open order by client order id; returns it with status canceled."""

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders, optionally of one symbol."""

    async def fetch_positions(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Open positions: symbol → (signed contracts, +long/−short; entry price in quote), for
        the reconciliation on start (SPEC O-5, L-3)."""

    def spread_pct(self, symbol: str, price: float) -> float | None:
        """Latest bid/ask spread of ``symbol`` in % of mid (from the cached top of book), or
        None when unknown (SPEC F-1 then denies)."""
