"""Ports of the trading core (STYLE: ports and adapters). The engine talks to an exchange and a
clock only through these; the simulated exchange and the ccxt adapter implement the same port."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from trading.domain.models import Market, Order, Position


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


class CandleEngine(Protocol):
    """What a market feed drives (SPEC S-2, O-9): the engine's facade. ``feeds`` maps (symbol,
    timeframe) to the engine's feed state (``symbol``, ``timeframe``, ``timeframe_ms``)."""

    feeds: Mapping[tuple[str, str], Any]

    def warm(self, feed: Any, h: float, low: float, c: float, v: float) -> bool:
        """Feed a closed candle into the market state only (warm-up); True once warm."""

    def tick(self, now_ms: int) -> None:
        """Clock duties at ``now_ms`` (epoch ms UTC): day roll-over, equity samples."""

    def step(self, feed: Any, o: float, h: float, low: float, c: float, v: float) -> Awaitable[object] | None:
        """One closed candle through the engine: the market state at once, the order work
        returned as an awaitable (None when there is none)."""


class PositionBook(Protocol):
    """The engine's markets and open positions, read by the user-data stream (S-2)."""

    markets: Mapping[str, Market]
    positions: Mapping[tuple[str, str], Position]


class ExchangePort(Protocol):
    """The venue port (SPEC O-9): everything the engine, the order gateway, the fill tracker and
    the reconciler call, implemented alike by the simulated exchange (paper, backtest) and the
    ccxt adapter (demo, live). Binance USDⓈ-M semantics, one-way mode.

    Amounts in contracts, prices in quote, balance in quote. Errors:
    ``trading.domain.errors.OrderRejected`` for business rejections (never retried),
    ``OrderNotFound`` for an unknown order, ``trading.domain.errors.ExchangeError`` otherwise.
    """

    async def load_markets(self) -> dict[str, Market]:
        """Market rules per ccxt unified symbol."""

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """Set the leverage used for new positions on ``symbol``."""

    async def set_margin_mode(self, symbol: str, margin_mode: str) -> None:
        """``isolated`` or ``cross`` margin for ``symbol`` (SPEC O-7)."""

    async def fetch_balance(self) -> Decimal:
        """Wallet balance (realised) in quote."""

    async def create_order(self, order: Order) -> Order:
        """Place ``order`` (its client order id makes retries idempotent, SPEC O-2); returns the
        order as accepted (status open, or closed if it filled at once)."""

    async def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        """Cancel an open order by client order id; returns it with status canceled. Raises
        OrderNotFound when the venue does not hold it open."""

    async def fetch_order(self, client_order_id: str, symbol: str) -> Order:
        """One order by client order id, in any status, with what filled (``filled``,
        ``average``, ``fee`` when known). Raises OrderNotFound when the venue never accepted it."""

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders, optionally of one symbol."""

    async def fetch_positions(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Open positions: symbol → (signed contracts, +long/−short; entry price in quote), for
        the reconciliation on start (SPEC O-5, L-3)."""

    async def fetch_mark_price(self, symbol: str) -> Decimal:
        """The exchange's mark price of ``symbol`` in quote, read between candle closes by the
        demo/live account watch (SPEC R-3)."""

    async def spread_pct(self, symbol: str, price: float) -> float | None:
        """The bid/ask spread of ``symbol`` now, in % of mid, read when an entry is being
        decided (SPEC F-1); ``price`` (quote) is the decision's reference price. None when it
        cannot be read (F-1 then denies: fail closed)."""
