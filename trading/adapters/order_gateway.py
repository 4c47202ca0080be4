"""The hardened order path between the engine and a real exchange (SPEC O-2, O-4, O-8).

:class:`OrderGateway` wraps an exchange adapter (``trading.adapters.ccxt_exchange.CcxtExchange``) and is
itself an ``ExchangePort``:

- O-2: the order (with its deterministic client order id) is handed to ``record`` — the engine's
  persistence hook — *before* it is sent; ``create_order`` is never blindly resent: after a
  timeout, a network error or an HTTP 5xx the order is looked up by client order id; a market
  or limit order that the exchange does not know (Binance's order service can answer -2013
  "unknown" for a while after its matching engine accepted an order) is checked for signs that
  it executed — a fill since it was sent that belongs to it or to an order the exchange cannot
  show yet, and, for an entry, a position on its symbol — and, without such a sign, looked up
  again over several seconds (``lookup_delays_s``) and checked once more before it is placed
  again. Binance enforces client-id uniqueness only among *open* orders, so a resend of a filled
  entry would be a second entry (issue 13 defect 2). When in doubt the order is not sent again:
  it is handed back as accepted and unconfirmed, and the fill tracker and the reconciliation
  (SPEC O-5) settle it. A conditional order is sent again at once (its id is refused while the
  first is open). A reply "client order id duplicated" (-4116) is answered by the look-up too.
- O-4: reads and cancels retry with exponential back-off and full jitter, bounded by
  ``max_attempts``; -1021 resyncs the clock (``load_time_difference``) and retries; rate-limit
  errors wait what the exchange says (Retry-After): 429 and the 418 IP ban alike block every
  call of this gateway until then — no request is sent before the ban ends (sending during a
  ban extends it), a call waits it out when it ends within ``max_retry_after_s`` and fails at
  once otherwise (defect 8); business rejections are raised at once with the exchange's reason.
- O-8: one order operation per symbol at a time (an ``asyncio.Lock`` per symbol).

The sleep function and the clock are injected so tests advance a simulated clock instead of
waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
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
from trading.domain.models import ZERO, Market, Order, OrderLeg, OrderStatus, OrderType
from trading.domain.oms import regenerated_client_order_id

log = logging.getLogger(__name__)
T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Record = Callable[[Order], Awaitable[bool]]
MAX_ID_RENEWALS = 3  # generations of a conditional order's id tried after "id used before" (OKX)
LOOKUP_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # look-ups of an order of unknown fate, spread over 7.5 s
VISIBILITY_GRACE_MS = 10_000  # an order this young may still be invisible to the order service
CLOCK_SKEW_MS = 5_000  # fills this much before an order was sent still count as its possible fills


def _wall_ms() -> int:
    return int(time.time() * 1000)


def tracked_view(order: Order, seen: Order) -> Order:
    """``order`` as the engine tracks it after the exchange answered ``seen``: the exchange's
    status, but no fill (the fill tracker books fills, SPEC O-5) — and open while a fill is still
    to be booked (a market order answers FILLED at once with ``newOrderRespType=RESULT``)."""
    status = OrderStatus.OPEN if seen.filled > 0 else seen.status
    return replace(order, status=status, filled=ZERO, average=None, fee=None,
                   updated_ms=seen.updated_ms or order.updated_ms)


class OrderGateway:
    """ExchangePort with idempotent order placement, bounded retries and per-symbol locks.

    Args:
        exchange: the adapter (needs the port methods plus ``fetch_order`` and
            ``load_time_difference``);
        record: awaited with each order before it is sent (persist it, SPEC O-2); returns True
            when that client order id was recorded before (the order is then looked up first);
        sleep: ``asyncio.sleep`` or a test clock's; rng: jitter source; clock: epoch ms now
            (the wall clock, or a test clock moved by ``sleep``);
        max_attempts: tries per operation (first try included); base_delay_s / max_delay_s:
            back-off bounds in seconds; max_retry_after_s: the longest Retry-After one call
            waits out (a longer ban fails the call; later calls fail at once until it ends);
        lookup_delays_s: the waits before each look-up of an order of unknown fate.
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
        clock: Callable[[], int] = _wall_ms,
        lookup_delays_s: tuple[float, ...] = LOOKUP_DELAYS_S,
    ) -> None:
        self.exchange = exchange
        self._record = record
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_retry_after_s = max_retry_after_s
        self._clock = clock
        self.lookup_delays_s = lookup_delays_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._sent_ms: dict[str, int] = {}  # client order id → when this gateway sent it
        self.blocked_until_ms = 0  # Retry-After of a 429 / 418: no request before this
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

    async def _respect_block(self) -> None:
        """Before a request: wait out a rate-limit block that ends within ``max_retry_after_s``;
        raise RateLimited (nothing sent) while a longer one lasts (defect 8)."""
        left_ms = self.blocked_until_ms - self._clock()
        if left_ms <= 0:
            return
        if left_ms > self.max_retry_after_s * 1000:
            self.stats["refused_while_banned"] += 1
            raise RateLimited(f"the exchange asked us to wait {left_ms / 1000:.0f} s more (rate limit / IP ban); "
                              "nothing sent", left_ms / 1000)
        await self._sleep(left_ms / 1000)

    async def _handle_transient(self, exc: ExchangeError, attempt: int) -> None:
        """Wait or resync before the next attempt; re-raise when not retryable or exhausted."""
        if isinstance(exc, RateLimited):
            self.stats["rate_limited"] += 1
            self.blocked_until_ms = max(self.blocked_until_ms, self._clock() + int(exc.retry_after_s * 1000))
        if isinstance(exc, OrderRejected | OrderNotFound) or attempt + 1 >= self.max_attempts:
            raise exc
        if isinstance(exc, RateLimited):
            await self._respect_block()
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
                await self._respect_block()
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

    async def fetch_account_rules(self, symbols: list[str]):
        """Position mode, multi-assets mode and commission rates (retried), see
        ``CcxtExchange.fetch_account_rules`` (SPEC O-7)."""
        return await self._retrying(lambda: self.exchange.fetch_account_rules(symbols))

    async def load_time_difference(self) -> None:
        """Resync the clock offset (retried)."""
        await self._retrying(self.exchange.load_time_difference)

    async def fetch_mark_price(self, symbol: str) -> Decimal | None:
        """The exchange's mark price of ``symbol`` (quote) for the account watch between candle
        closes (SPEC R-3); one read, not retried — None when it fails (the next pass reads
        again)."""
        try:
            await self._respect_block()
            return await self.exchange.fetch_mark_price(symbol)
        except ExchangeError as exc:
            log.warning("mark price of %s not read (%s)", symbol, exc)
            return None

    async def spread_pct(self, symbol: str, price: float) -> float | None:
        """The exchange's bid/ask spread of ``symbol`` now, in % of mid (SPEC F-1): one read,
        not retried — a failed read (or a rate-limit block) gives None, which denies this entry
        (fail closed) without holding up the candle step; the next candidate reads again."""
        try:
            await self._respect_block()
            return await self.exchange.spread_pct(symbol, price)
        except ExchangeError as exc:
            log.warning("spread of %s not read (%s): the entry is denied by F-1", symbol, exc)
            return None

    async def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        """Cancel under the symbol lock, retried (SPEC O-4, O-8). An order this gateway sent
        moments ago that the exchange does not know yet (its order service lags, defect 4) is
        asked again over the next seconds before the cancel gives up.

        Raises:
            OrderNotFound: unknown or no longer open — after a retry whose first attempt may have
                reached the exchange, that means it is gone, which is what was asked.
        """
        async with self.lock(symbol):
            try:
                return await self._retrying(lambda: self.exchange.cancel_order(client_order_id, symbol))
            except OrderNotFound:
                sent = self._sent_ms.get(client_order_id)
                if sent is None or self._clock() - sent > VISIBILITY_GRACE_MS:
                    raise
            for delay in self.lookup_delays_s:
                self.stats["cancel_again"] += 1
                await self._sleep(delay)
                try:
                    return await self._retrying(lambda: self.exchange.cancel_order(client_order_id, symbol))
                except OrderNotFound:
                    if self._clock() - self._sent_ms[client_order_id] > VISIBILITY_GRACE_MS:
                        break
            raise OrderNotFound(f"{symbol}: Unknown order sent ({client_order_id})")

    async def create_untracked(self, order: Order) -> Order:
        """Send an order that is not the engine's (the daily canary, a reduce-only close of a
        foreign position): once, not recorded, never retried or resent; under the symbol lock
        (O-8) and never during a rate-limit block (O-4).

        Raises:
            ExchangeError: the exchange refused it or could not be reached (state unknown: the
                reconciliation cancels a stray of ours, SPEC O-5).
        """
        async with self.lock(order.symbol):
            await self._respect_block()
            self._sent_ms[order.client_order_id] = self._clock()
            try:
                return await self.exchange.create_order(order)
            except RateLimited as exc:
                self.blocked_until_ms = max(self.blocked_until_ms, self._clock() + int(exc.retry_after_s * 1000))
                raise

    async def create_order(self, order: Order) -> Order:
        """Place ``order`` exactly once (SPEC O-2), under the symbol lock (O-8).

        The order is recorded before the first send; an id recorded before is looked up before
        anything is sent. The order returned carries the exchange's status but no fill (fills
        are booked from the exchange by ``trading.app.reconcile.FillTracker``; an order with a
        fill to book is returned open). An unknown outcome (timeout, network error, 5xx) or a
        "duplicated" reply is resolved by looking the order up by client order id over several
        seconds; it is sent again only if the exchange still does not know it and shows no sign
        that it executed (see the module docstring) — otherwise it is returned as accepted
        (unconfirmed) and never sent twice. The order returned carries in ``updated_ms`` the
        time of its last send at the latest: an order sent again seconds after it was created
        (look-ups and back-off in between) gets its "not visible yet" grace from that send
        (``trading.app.reconcile.unconfirmed``), not from its creation.

        Raises:
            OrderRejected: a business rejection, with the exchange's reason (never retried).
            ExchangeError: retries exhausted; the order's fate may be unknown — reconciliation
                (SPEC O-5) settles it from the exchange.
        """
        async with self.lock(order.symbol):
            return self._stamped(await self._create(order))

    def _stamped(self, view: Order) -> Order:
        """``view`` with ``updated_ms`` no earlier than this gateway's last send of its id."""
        sent = self._sent_ms.get(view.client_order_id)
        return view if sent is None or sent <= view.updated_ms else replace(view, updated_ms=sent)

    def _renewed(self, order: Order, found: Order | None, depth: int) -> Order | None:
        """The conditional ``order`` under the next generation of its id, when the venue refused
        its id as used before and nothing is known to work under it — or None to keep the
        answer as it is.

        Binance refuses an id only while an order under it is open (-4116): the order found, or
        not shown yet, rests — nothing to do. OKX refuses an id used at any time before (51016):
        the order under it may be dead (triggered and refused, cancelled) and invisible to the
        look-up, and taking the refusal for "it rests" would report a stop that does not work
        (issue 18). A stop or take-profit found dead or not found at all is therefore sent
        again under :func:`trading.domain.oms.regenerated_client_order_id` (recorded first,
        O-2): it is reduce-only and adds no exposure; if the first one was alive after all, the
        reconciliation cancels it as a stray of ours once the venue shows it (O-5). Market and
        limit orders are never renewed (a second entry would be a second position)."""
        if getattr(self.exchange, "duplicate_means_open", True) or depth >= MAX_ID_RENEWALS:
            return None
        if order.type in (OrderType.MARKET, OrderType.LIMIT) or not order.reduce_only:
            return None
        if found is not None and found.status in (OrderStatus.OPEN, OrderStatus.CLOSED):
            return None  # it works, or it filled (the fill tracker books it)
        cid = regenerated_client_order_id(order.client_order_id)
        if cid is None:
            return None
        self.stats["id_renewed"] += 1
        log.warning("%s on %s: the venue refuses the id as used before and nothing works under it; "
                    "sending it again as %s", order.client_order_id, order.symbol, cid)
        return replace(order, client_order_id=cid)

    async def _create(self, order: Order, depth: int = 0) -> Order:
        """:meth:`create_order` under the symbol lock (``depth``: ids renewed so far)."""
        if self._record is not None and await self._record(order):
            # Sent before (a retry, or a restart after a kill): look before sending again.
            self.stats["lookup_before_resend"] += 1
            found = await self._settle(order)
            if found is not None:
                return found
        attempt = 0
        while True:
            try:
                await self._respect_block()
                self._sent_ms[order.client_order_id] = self._clock()
                accepted = await self.exchange.create_order(order)
                return tracked_view(order, accepted)
            except DuplicateClientOrderId:
                # An order holds this id: ours, sent before. Find it; while the order service
                # does not show it yet, it is accepted and unconfirmed.
                self.stats["duplicate_reply"] += 1
                found = await self._lookup(order)
                renewed = self._renewed(order, found, depth)
                if renewed is not None:
                    return await self._create(renewed, depth + 1)
                return found if found is not None else replace(order, status=OrderStatus.OPEN, filled=ZERO,
                                                               average=None)
            except OrderRejected:
                raise
            except (ExchangeUnavailable, TimestampOutOfSync, RateLimited) as exc:
                if isinstance(exc, ExchangeUnavailable):
                    # The outcome is unknown: look before sending again (never blind resend).
                    self.stats["lookup_after_unknown"] += 1
                    found = await self._settle(order)
                    if found is not None:
                        return found
                await self._handle_transient(exc, attempt)
                attempt += 1

    async def _settle(self, order: Order) -> Order | None:
        """After an unknown outcome: the order as the exchange knows it; or, when it is unknown
        but the exchange shows signs that it executed, the order as accepted and unconfirmed
        (never sent again — the fill tracker books it as soon as the exchange shows it); or None
        when it is safe to send it (again).

        A conditional order (stop, take-profit) is sent again at once: Binance refuses its id
        while the first one is open (-4116, looked up) and it never adds exposure. A market or
        limit order is checked for signs of execution first — without waiting, so the loop keeps
        supervising a position that may already be open — and only then looked up again over
        ``lookup_delays_s`` (nothing executed: no exposure waits) before a resend.

        Raises:
            ExchangeError: the look-ups themselves failed after their retries (state unknown).
        """
        found = await self._lookup(order)
        if found is not None:
            return found
        if order.type not in (OrderType.MARKET, OrderType.LIMIT):
            return None
        if await self._may_have_executed(order):
            return self._withheld(order)
        found = await self._lookup_spread(order, first=False)
        if found is not None:
            return found
        if await self._may_have_executed(order):
            return self._withheld(order)
        return None

    def _withheld(self, order: Order) -> Order:
        self.stats["resend_withheld"] += 1
        log.warning("%s on %s: the exchange does not show it yet but may have executed it; not sending it "
                    "again (the fill tracker and the reconciliation settle it)", order.client_order_id, order.symbol)
        return replace(order, status=OrderStatus.OPEN, filled=ZERO, average=None)

    async def _lookup_spread(self, order: Order, *, first: bool = True) -> Order | None:
        """:meth:`_lookup` (now, unless ``first`` is False) and after each of ``lookup_delays_s``
        until the exchange knows it."""
        found = await self._lookup(order) if first else None
        for delay in self.lookup_delays_s:
            if found is not None:
                return found
            self.stats["lookup_again"] += 1
            await self._sleep(delay)
            found = await self._lookup(order)
        return found

    async def _may_have_executed(self, order: Order) -> bool:
        """Signs that ``order`` executed although it cannot be looked up yet: a fill on its
        symbol since it was sent that is its own or of an order the exchange cannot show; for an
        entry, a position on its symbol (the engine never enters a symbol it holds). Any doubt (a
        read failing) counts as a sign."""
        exchange = self.exchange
        if not hasattr(exchange, "fetch_my_trades"):
            return False
        try:
            since = order.created_ms - CLOCK_SKEW_MS
            trades = await self._retrying(lambda: exchange.fetch_my_trades(order.symbol, since))
            for trade in trades:
                if trade.client_order_id == order.client_order_id:
                    return True
                try:
                    cid = await self._retrying(lambda: exchange.client_order_id_of(order.symbol, trade.order_id))
                except OrderNotFound:
                    return True  # a fill of an order the exchange cannot show yet
                if cid == order.client_order_id:
                    return True
            if order.leg is OrderLeg.ENTRY:
                positions = await self._retrying(exchange.fetch_positions)
                if positions.get(order.symbol, (ZERO, ZERO))[0] != 0:
                    return True
        except ExchangeError:
            return True
        return False

    async def _lookup(self, order: Order) -> Order | None:
        """The order as the exchange knows it, or None when it does not know it (yet).

        Raises:
            ExchangeError: the look-up itself failed after its retries (state unknown).
        """
        try:
            found = await self._retrying(lambda: self.exchange.fetch_order(order.client_order_id, order.symbol))
        except OrderNotFound:
            return None
        return tracked_view(order, found)
