"""The hardened order path between the engine and a real exchange (SPEC O-2, O-4, O-8).

:class:`OrderGateway` wraps an exchange adapter (``trading.adapters.ccxt_exchange.CcxtExchange``) and is
itself an ``ExchangePort``:

- O-2: the order (with its deterministic client order id) is handed to ``record`` — the engine's
  persistence hook — *before* it is sent; ``create_order`` is never blindly resent: after a
  timeout, a network error or an HTTP 5xx the order is looked up by client order id and placed
  again only when the exchange does not know it; an exchange reply "client order id duplicated"
  (-4116) is answered by the lookup too.
- O-4: reads and cancels retry with exponential back-off and full jitter, bounded by
  ``max_attempts``; -1021 resyncs the clock (``load_time_difference``) and retries; rate-limit
  errors (429/418) wait the exchange's Retry-After; business rejections are raised at once with
  the exchange's reason.
- O-8: one order operation per symbol at a time (an ``asyncio.Lock`` per symbol).

The sleep function is injected so tests advance a simulated clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from dataclasses import replace
from typing import Any, TypeVar

from trading.domain.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TimestampOutOfSync,
)
from trading.domain.models import ZERO, Market, Order

log = logging.getLogger(__name__)
T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Record = Callable[[Order], Awaitable[bool]]


class OrderGateway:
    """ExchangePort with idempotent order placement, bounded retries and per-symbol locks.

    Args:
        exchange: the adapter (needs the port methods plus ``fetch_order`` and
            ``load_time_difference``);
        record: awaited with each order before it is sent (persist it, SPEC O-2); returns True
            when that client order id was recorded before (the order is then looked up first);
        sleep: ``asyncio.sleep`` or a test clock's; rng: jitter source;
        max_attempts: tries per operation (first try included); base_delay_s / max_delay_s:
            back-off bounds in seconds; max_retry_after_s: cap on a Retry-After wait.
    """

    def __init__(
        self,
        exchange: Any,
        *,
        record: Record | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        max_attempts: int = 6,
        base_delay_s: float = 0.25,
        max_delay_s: float = 8.0,
        max_retry_after_s: float = 60.0,
    ) -> None:
        self.exchange = exchange
        self._record = record
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_retry_after_s = max_retry_after_s
        self._locks: dict[str, asyncio.Lock] = {}
        self.stats: Counter = Counter()  # retries and look-ups by kind, for reports and tests

    # ------------------------------------------------------------ helpers
    def lock(self, symbol: str) -> asyncio.Lock:
        """The per-symbol order lock (SPEC O-8)."""
        lock = self._locks.get(symbol)
        if lock is None:
            lock = self._locks[symbol] = asyncio.Lock()
        return lock

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base × 2^attempt)] seconds."""
        return self._rng.uniform(0, min(self.max_delay_s, self.base_delay_s * (2 ** attempt)))

    async def _handle_transient(self, exc: ExchangeError, attempt: int) -> None:
        """Wait or resync before the next attempt; re-raise when not retryable or exhausted."""
        if isinstance(exc, OrderRejected | OrderNotFound) or attempt + 1 >= self.max_attempts:
            raise exc
        if isinstance(exc, RateLimited):
            self.stats["rate_limited"] += 1
            await self._sleep(min(exc.retry_after_s, self.max_retry_after_s))
        elif isinstance(exc, TimestampOutOfSync):
            self.stats["time_resync"] += 1
            try:
                await self.exchange.load_time_difference()
            except ExchangeError:
                await self._sleep(self._backoff(attempt))
        elif isinstance(exc, ExchangeUnavailable):
            self.stats["backoff"] += 1
            await self._sleep(self._backoff(attempt))
        else:
            raise exc

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a read or a cancel with the O-4 retry policy."""
        attempt = 0
        while True:
            try:
                return await call()
            except ExchangeError as exc:
                await self._handle_transient(exc, attempt)
                attempt += 1

    # ---------------------------------------------------------------- port
    async def load_markets(self) -> dict[str, Market]:
        """Market rules (retried)."""
        return await self._retrying(self.exchange.load_markets)

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """Leverage (×) for ``symbol`` (retried; idempotent)."""
        await self._retrying(lambda: self.exchange.set_leverage(symbol, leverage))

    async def set_margin_mode(self, symbol: str, margin_mode: str) -> None:
        """``isolated`` or ``cross`` margin for ``symbol`` (retried; idempotent, SPEC O-7)."""
        await self._retrying(lambda: self.exchange.set_margin_mode(symbol, margin_mode))

    async def fetch_balance(self) -> Decimal:
        """Wallet balance in quote (retried)."""
        return await self._retrying(self.exchange.fetch_balance)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (retried)."""
        return await self._retrying(lambda: self.exchange.fetch_open_orders(symbol))

    async def fetch_order(self, client_order_id: str, symbol: str) -> Order:
        """One order by client order id (retried). Raises OrderNotFound when unknown."""
        return await self._retrying(lambda: self.exchange.fetch_order(client_order_id, symbol))

    async def fetch_ohlcv(self, symbol: str, timeframe: str, limit: int) -> list:
        """Recent candles (retried), see ``CcxtExchange.fetch_ohlcv``."""
        return await self._retrying(lambda: self.exchange.fetch_ohlcv(symbol, timeframe, limit))

    async def fetch_positions(self) -> dict[str, tuple[Decimal, Decimal]]:
        """The exchange's open positions (retried): symbol → (signed contracts, entry price in
        quote), as ``ExchangePort.fetch_positions``."""
        return await self._retrying(self.exchange.fetch_positions)

    async def load_time_difference(self) -> None:
        """Resync the clock offset (retried)."""
        await self._retrying(self.exchange.load_time_difference)

    def spread_pct(self, symbol: str, price: float) -> float | None:
        """The adapter's cached spread (SPEC F-1)."""
        return self.exchange.spread_pct(symbol, price)

    async def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        """Cancel under the symbol lock, retried (SPEC O-4, O-8).

        Raises:
            OrderNotFound: unknown or no longer open — after a retry whose first attempt may have
                reached the exchange, that means it is gone, which is what was asked.
        """
        async with self.lock(symbol):
            return await self._retrying(lambda: self.exchange.cancel_order(client_order_id, symbol))

    async def create_order(self, order: Order) -> Order:
        """Place ``order`` exactly once (SPEC O-2), under the symbol lock (O-8).

        The order is recorded before the first send; an id recorded before is looked up before
        anything is sent. The order returned carries the exchange's status but no fill (fills
        are booked from the exchange by ``trading.app.reconcile.FillTracker``). An unknown outcome (timeout, network error,
        5xx) or a "duplicated" reply is resolved by looking the order up by client order id; it is
        sent again only if the exchange does not know it.

        Raises:
            OrderRejected: a business rejection, with the exchange's reason (never retried).
            ExchangeError: retries exhausted; the order's fate may be unknown — reconciliation
                (SPEC O-5) settles it from the exchange.
        """
        async with self.lock(order.symbol):
            if self._record is not None and await self._record(order):
                # Sent before (a retry, or a restart after a kill): look before sending again.
                self.stats["lookup_before_resend"] += 1
                found = await self._lookup(order)
                if found is not None:
                    return found
            attempt = 0
            while True:
                try:
                    accepted = await self.exchange.create_order(order)
                    # Fills are booked from the exchange by the fill tracker (SPEC O-5); the
                    # order handed back carries none, so none is booked twice or skipped.
                    if accepted.filled or accepted.average is not None or accepted.fee is not None:
                        accepted = replace(accepted, filled=ZERO, average=None, fee=None)
                    return accepted
                except DuplicateClientOrderId:
                    self.stats["duplicate_reply"] += 1
                    found = await self._lookup(order)
                    if found is not None:
                        return found
                    raise
                except OrderRejected:
                    raise
                except (ExchangeUnavailable, TimestampOutOfSync, RateLimited) as exc:
                    if isinstance(exc, ExchangeUnavailable):
                        # The outcome is unknown: look before sending again (never blind resend).
                        self.stats["lookup_after_unknown"] += 1
                        found = await self._lookup(order)
                        if found is not None:
                            return found
                    await self._handle_transient(exc, attempt)
                    attempt += 1

    async def _lookup(self, order: Order) -> Order | None:
        """The order as the exchange knows it, or None when it was never accepted.

        Raises:
            ExchangeError: the look-up itself failed after its retries (state unknown).
        """
        try:
            found = await self._retrying(lambda: self.exchange.fetch_order(order.client_order_id, order.symbol))
        except OrderNotFound:
            return None
        return replace(order, status=found.status, updated_ms=found.updated_ms)
