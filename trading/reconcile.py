"""Keeping the local state true to the exchange (SPEC O-5, O-6, L-3).

- :class:`FillTracker` finds the fills of the orders the engine tracks (an order missing from the
  exchange's open list is looked up by client order id) and books them through
  ``Engine.on_fill``; partial fills are booked as they grow (the rest of an entry is booked as an
  addition, so brackets follow the size).
- :class:`StopVerifier` (O-6): 1.5 s after each entry fill the stop must be resting on the
  exchange; if not it is placed again, and if that fails the position is closed at market with a
  NO_STOP alert (``Engine.ensure_stop``).
- :class:`Reconciler` (O-5, at start — before any entry, L-3 — and every 30 s): the exchange is
  the truth. Missed fills are booked, orders of ours (client-id prefix) that the engine does not
  track are cancelled, local positions are repaired to the exchange's size, and every position
  gets a resting stop.

These talk to the exchange through the order gateway (retries, locks) and to the engine through
its small public methods only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal

from trading.engine import Engine
from trading.errors import ExchangeError, OrderNotFound
from trading.models import Fill, Order, OrderLeg, OrderStatus
from trading.oms import client_order_id_prefix

log = logging.getLogger(__name__)

STOP_VERIFY_DELAY_MS = 1_500  # SPEC O-6
RECONCILE_EVERY_MS = 30_000  # SPEC O-5


@dataclass(slots=True)
class FillTracker:
    """Books the fills of tracked orders (SPEC O-5 "missed fills are booked").

    A partly filled order stays tracked with its ``filled`` and ``average`` updated (persisted
    with the fill, so a restart resumes from what was booked); each poll books only the growth.

    Args: engine; gateway (``OrderGateway`` or any port with ``fetch_order``); verifier to
    schedule the O-6 check after entries (optional).
    """

    engine: Engine
    gateway: object
    verifier: "StopVerifier | None" = None

    async def poll(self) -> int:
        """Look for new fills; returns how many were booked.

        Raises:
            ExchangeError: the exchange could not be read (the next poll tries again).
        """
        engine = self.engine
        watched = list(engine.open_orders.values())
        if not watched:
            return 0
        open_by_id: dict[str, Order] = {}
        for symbol in sorted({o.symbol for o in watched}):
            for order in await self.gateway.fetch_open_orders(symbol):
                open_by_id[order.client_order_id] = order
        booked = 0
        for local in watched:
            cid = local.client_order_id
            if engine.tracked_order(cid) is None:
                continue  # dropped meanwhile (a fill closed its position and cancelled it)
            remote = open_by_id.get(cid)
            if remote is None or remote.filled > local.filled:
                try:
                    remote = await self.gateway.fetch_order(cid, local.symbol)
                except OrderNotFound:
                    engine.forget_order(cid, OrderStatus.REJECTED, "not on the exchange")
                    continue
            booked += await self._book(local, remote)
        return booked

    async def _book(self, local: Order, remote: Order) -> int:
        engine = self.engine
        cid = local.client_order_id
        done = local.filled
        booked = 0
        if remote.filled > done and remote.average is not None:
            increment = remote.filled - done
            value_before = done * (local.average or Decimal(0))
            price = (remote.filled * remote.average - value_before) / increment
            market = engine.markets[local.symbol]
            price = price.quantize(market.tick_size) if market.tick_size > 0 else price
            fee = increment * market.contract_size * price * market.taker_fee
            leg = local.leg
            if done > 0 and leg is OrderLeg.ENTRY:
                leg = OrderLeg.ADD  # the rest of a partly filled entry grows the position
            fill = Fill(cid, local.bot, local.symbol, local.side, leg, increment, price, fee,
                        remote.updated_ms or engine.clock.now_ms())
            log.info("fill booked: %s %s %s at %s (order filled %s of %s)", cid, leg.value, increment,
                     price, remote.filled, local.amount)
            try:
                await engine.on_fill(fill)
            finally:
                if remote.status is OrderStatus.OPEN:
                    # Still working: it stays tracked with what is booked so far.
                    engine.track_partial(replace(local, filled=remote.filled, average=remote.average))
            booked = 1
            if local.leg is OrderLeg.ENTRY and done == 0 and self.verifier is not None:
                self.verifier.schedule(local.bot, local.symbol, engine.clock.now_ms())
        elif remote.status is not OrderStatus.OPEN:
            engine.forget_order(cid, remote.status, remote.reason or "closed on the exchange")
        return booked


@dataclass(slots=True)
class StopVerifier:
    """SPEC O-6: verify the stop STOP_VERIFY_DELAY_MS after each entry fill."""

    engine: Engine
    gateway: object
    due: dict[tuple[str, str], int] = field(default_factory=dict)  # (bot, symbol) → due ms
    replaced: int = 0

    def schedule(self, bot: str, symbol: str, filled_ms: int) -> None:
        """Check ``bot``'s stop on ``symbol`` at ``filled_ms`` + 1.5 s (epoch ms)."""
        self.due[(bot, symbol)] = filled_ms + STOP_VERIFY_DELAY_MS

    async def run_due(self, now_ms: int) -> None:
        """Run the checks that are due at ``now_ms``."""
        for key, when in list(self.due.items()):
            if when <= now_ms:
                await self.verify(*key)  # an ExchangeError keeps it due for the next tick
                self.due.pop(key, None)

    async def verify(self, bot: str, symbol: str) -> bool:
        """True when the stop rests on the exchange; otherwise place it again (or close at
        market, ``Engine.ensure_stop``) and return False."""
        if (bot, symbol) not in self.engine.positions:
            return True
        stop = self.engine.stop_of(bot, symbol)
        if stop is not None:
            try:
                remote = await self.gateway.fetch_order(stop.client_order_id, symbol)
                if remote.status is OrderStatus.OPEN:
                    return True
            except OrderNotFound:
                pass
        log.error("stop of %s on %s is missing; placing it again", bot, symbol)
        self.replaced += 1
        await self.engine.ensure_stop(bot, symbol)
        return False


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What a reconciliation changed: fills booked, stray orders cancelled, positions
    repaired, stops placed again."""

    fills_booked: int
    strays_cancelled: int
    positions_repaired: int
    stops_replaced: int


@dataclass(slots=True)
class Reconciler:
    """SPEC O-5: make the local state equal to the exchange (the truth)."""

    engine: Engine
    gateway: object
    tracker: FillTracker
    verifier: StopVerifier
    prefixes: tuple[str, ...] = ()
    runs: int = 0

    def __post_init__(self) -> None:
        if not self.prefixes:
            self.prefixes = tuple(client_order_id_prefix(self.engine.env, b) for b in self.engine.bots)

    def _bot_of(self, symbol: str) -> str | None:
        for name, bot in self.engine.bots.items():
            if symbol in bot.profile.symbols:
                return name
        return None

    async def run(self) -> ReconcileReport:
        """One reconciliation pass.

        Raises:
            ExchangeError: the exchange could not be read; nothing half-done is assumed (the next
                pass starts over).
        """
        engine = self.engine
        fills = await self.tracker.poll()
        remote_positions = {p.symbol: p for p in await self.gateway.fetch_positions()}
        repaired = 0
        symbols = {s for b in engine.bots.values() for s in b.profile.symbols}
        for symbol in sorted(symbols):
            bot = self._bot_of(symbol)
            if bot is None:
                continue
            remote = remote_positions.get(symbol)
            signed = remote.contracts if remote else Decimal(0)
            local = engine.positions.get((bot, symbol))
            local_signed = Decimal(0) if local is None else local.contracts * local.side.sign
            if signed != local_signed:
                repaired += 1
                await engine.repair_position(bot, symbol, signed, remote.entry_price if remote else Decimal(0))
        strays = 0
        open_orders = []
        for symbol in sorted(symbols):  # per symbol: Binance weighs a no-symbol query 40×
            open_orders += await self.gateway.fetch_open_orders(symbol)
        for order in open_orders:
            ours = order.client_order_id.startswith(self.prefixes)
            if ours and engine.tracked_order(order.client_order_id) is None:
                try:
                    await self.gateway.cancel_order(order.client_order_id, order.symbol)
                    strays += 1
                except OrderNotFound:
                    pass
        resting = {o.client_order_id for o in open_orders}
        replaced = 0
        for (bot, symbol) in list(engine.positions):
            stop = engine.stop_of(bot, symbol)
            if stop is None or stop.client_order_id not in resting:
                if stop is not None:
                    try:
                        if (await self.gateway.fetch_order(stop.client_order_id, symbol)).status is OrderStatus.OPEN:
                            continue
                    except OrderNotFound:
                        pass
                replaced += 1
                await engine.ensure_stop(bot, symbol)
        self.runs += 1
        return ReconcileReport(fills, strays, repaired, replaced)


@dataclass(slots=True)
class Supervisor:
    """Drives the live order checks on the clock: fills are polled every ``poll_every_ms``, due
    stop verifications run (O-6), a position without a tracked stop gets one (R-10) and a
    reconciliation runs every 30 s (O-5). Call
    :meth:`tick` from the live loop (or a test) with the current time."""

    tracker: FillTracker
    verifier: StopVerifier
    reconciler: Reconciler
    poll_every_ms: int = 500
    _next_poll_ms: int = 0
    _next_reconcile_ms: int = 0
    failures: int = 0
    stops_placed: int = 0

    async def tick(self, now_ms: int) -> ReconcileReport | None:
        """Run what is due at ``now_ms``; returns the report of a reconciliation if one ran.
        Exchange errors are logged and retried at the next tick (never raised)."""
        report = None
        if now_ms >= self._next_reconcile_ms:
            try:
                report = await self.reconciler.run()
                self._next_reconcile_ms = now_ms + RECONCILE_EVERY_MS
                self._next_poll_ms = now_ms + self.poll_every_ms
            except ExchangeError as exc:
                self.failures += 1
                log.warning("reconciliation failed: %s", exc.reason)
        if now_ms >= self._next_poll_ms:
            if await safe(self.tracker.poll(), "fill poll"):
                self._next_poll_ms = now_ms + self.poll_every_ms
            else:
                self.failures += 1
        if not await safe(self.verifier.run_due(now_ms), "stop verification"):
            self.failures += 1
        engine = self.reconciler.engine
        for bot, symbol in list(engine.positions):
            if engine.stop_of(bot, symbol) is None:
                # a position must never rest without a stop (its stop filled partly,
                # expired or was forgotten): place one now, not at the next reconciliation.
                self.stops_placed += 1
                if not await safe(engine.ensure_stop(bot, symbol), "stop placement"):
                    self.failures += 1
                if (bot, symbol) in engine.positions and engine.stop_of(bot, symbol) is None:
                    # Still no stop (the exchange refused it: its position may differ from
                    # ours): reconcile at the next tick instead of in up to 30 s.
                    self._next_reconcile_ms = 0
        return report


async def safe(coro, what: str) -> bool:
    """Await ``coro``; an ExchangeError is logged (the next scheduled run tries again)."""
    try:
        await coro
        return True
    except ExchangeError as exc:
        log.warning("%s failed: %s", what, exc.reason)
        return False
