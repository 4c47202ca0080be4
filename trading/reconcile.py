"""Start-up reconciliation with the exchange (SPEC O-5, L-3): after a restart, before any new
entry, the state restored from SQLite is compared with what the exchange holds, the exchange
wins, and a report says what was found and what was repaired.

Checks, in order:
1. positions: an exchange position from an entry the bot sent but never saw fill (crash between
   entry and brackets) is booked as that entry's fill, which opens the position and places its
   brackets; any other exchange position the engine does not know is closed at market (nobody
   manages it and no stop protects it, R-10); a local position the exchange no longer holds is marked
   closed at its last known price (the exit fill happened while the bot was down); a size
   difference takes the exchange's size;
2. orders: a local open order the exchange no longer lists is marked canceled; an exchange
   order with this bot's client-id prefix that the engine does not know, or a reduce-only one
   on a symbol with no position, is cancelled (stray);
3. stops: every open position must have a resting stop-loss covering its contracts (R-10); a
   missing or short one is placed again (the new stop rests before an old one is cancelled); if
   the exchange rejects it the position is closed at market.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal

from trading.engine import Engine
from trading.errors import ExchangeError
from trading.events import OrderUpdated, PositionChanged, ReconcileReported
from trading.models import ExitReason, Fill, OrderLeg, OrderStatus, Side
from trading.oms import client_order_id_prefix

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReconcileReport:
    """What the start-up reconciliation found and repaired (SPEC O-5, L-3). ``ts`` epoch ms UTC;
    ``positions`` / ``open_orders`` the counts checked; ``found`` and ``repaired`` one line each."""

    ts: int
    positions: int = 0
    open_orders: int = 0
    found: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the saved state matched the exchange."""
        return not self.found

    def as_dict(self) -> dict:
        """Plain values for the audit record."""
        return {"positions": self.positions, "open_orders": self.open_orders,
                "found": list(self.found), "repaired": list(self.repaired)}

    def text(self) -> str:
        """The report as a trader reads it (chat / log)."""
        head = (f"🔁 Restart reconciliation: {self.positions} open position(s), "
                f"{self.open_orders} open order(s) checked against the exchange")
        if self.clean:
            return head + " — state matches, nothing to repair."
        lines = [head, "Found:", *(f"• {line}" for line in self.found)]
        if self.repaired:
            lines += ["Repaired:", *(f"• {line}" for line in self.repaired)]
        return "\n".join(lines)


async def reconcile(engine: Engine, exchange_positions: dict[str, tuple[Decimal, Decimal]]) -> ReconcileReport:
    """Reconcile ``engine``'s restored state with its exchange (the source of truth) and repair it.

    Args:
        engine: restored and started (``Engine.restore`` then ``await start()``).
        exchange_positions: symbol → (signed contracts, entry price) as the exchange reports them
            (``fetch_positions`` of the exchange port).

    Emits the repairs as engine events, then :class:`ReconcileReported`; returns the report.
    """
    now = engine.clock.now_ms()
    report = ReconcileReport(now, len(engine.positions), len(engine.open_orders))
    sink = engine.sink
    local = {symbol: position for (_bot, symbol), position in engine.positions.items()}
    pending = {symbol: (bot, entry) for (bot, symbol), entry in engine._pending.items()}
    resting = {o.client_order_id: o for o in await engine.exchange.fetch_open_orders()}
    # 1. positions
    for symbol, (contracts, _entry) in exchange_positions.items():
        position = local.get(symbol)
        waiting = pending.get(symbol)
        if position is None and waiting is not None:
            bot, entry = waiting
            order = entry.order
            if order.client_order_id in resting or (contracts > 0) != (entry.side is Side.LONG):
                continue  # still resting: it fills later, as usual
            # The entry filled while the bot was down (between entry and brackets): book the
            # fill at the exchange's entry price; on_fill opens the position and its brackets.
            amount = abs(contracts)
            market = engine.markets[symbol]
            report.found.append(f"{symbol}: entry {order.client_order_id} filled while down "
                                f"({amount} contracts @ {_entry})")
            await engine.on_fill(Fill(order.client_order_id, bot, symbol, order.side, OrderLeg.ENTRY, amount,
                                      _entry, amount * market.contract_size * _entry * market.taker_fee, now))
            report.repaired.append(f"{symbol}: fill booked, position opened with its stop-loss and take-profits")
            resting = {o.client_order_id: o for o in await engine.exchange.fetch_open_orders()}
        elif position is None:
            report.found.append(f"{symbol}: exchange position {contracts} contracts unknown to the bot")
            side = Side.LONG if contracts > 0 else Side.SHORT
            bot = next((b.name for b in engine.bots.values() if symbol in b.profile.symbols), "")
            orphan = _orphan_position(engine, bot, symbol, side, abs(contracts), _entry, now)
            if await engine._close_at_market(orphan, ExitReason.NO_STOP) is not None:
                report.repaired.append(f"{symbol}: closing the unmanaged {abs(contracts)} contracts at market")
        elif position is not None and position.side.sign * position.contracts != contracts:
            report.found.append(f"{symbol}: bot holds {position.side.sign * position.contracts}, "
                                f"exchange {contracts} contracts")
            if (contracts > 0) == (position.side is Side.LONG) and contracts != 0:
                updated = replace(position, contracts=abs(contracts))
                engine.positions[(position.bot, symbol)] = updated
                sink.emit(PositionChanged(updated))
                report.repaired.append(f"{symbol}: position size set to the exchange's {abs(contracts)}")
    for (bot, symbol), position in list(engine.positions.items()):
        if symbol not in exchange_positions:
            report.found.append(f"{symbol}: bot position {position.contracts} contracts not on the exchange")
            mark = engine.mark_price(symbol) or position.entry_price
            closed = replace(position, closed_ms=now, exit_price=mark, exit_reason=ExitReason.MANUAL)
            del engine.positions[(bot, symbol)]
            engine.held_symbols.discard(symbol)
            sink.emit(PositionChanged(closed))
            report.repaired.append(f"{symbol}: position marked closed (closed on the exchange while down)")
    # 2. orders
    for cid, order in list(engine.open_orders.items()):
        if cid not in resting:
            report.found.append(f"{order.symbol}: {order.leg.value} order {cid} open locally, not on the exchange")
            del engine.open_orders[cid]
            engine._pending.pop((order.bot, order.symbol), None)
            sink.emit(OrderUpdated(replace(order, status=OrderStatus.CANCELED, updated_ms=now,
                                           reason="RECONCILE: not on the exchange")))
            report.repaired.append(f"{order.symbol}: {cid} marked canceled")
    prefixes = tuple(client_order_id_prefix(engine.env, bot) for bot in engine.bots)
    held = {symbol for (_bot, symbol) in engine.positions}
    for cid, order in resting.items():
        ours = cid.startswith(prefixes)
        stray = ours and (cid not in engine.open_orders or (order.reduce_only and order.symbol not in held))
        if stray:
            report.found.append(f"{order.symbol}: stray {order.leg.value} order {cid} on the exchange")
            engine.open_orders.pop(cid, None)
            try:
                cancelled = await engine.exchange.cancel_order(cid, order.symbol)
            except ExchangeError as exc:
                report.repaired.append(f"{order.symbol}: cancel of {cid} failed: {exc.reason}")
                continue
            sink.emit(OrderUpdated(cancelled))
            report.repaired.append(f"{order.symbol}: stray order {cid} cancelled")
    # 3. every position has a stop for its whole size
    for position in list(engine.positions.values()):
        if engine._close_in_flight(position.bot, position.symbol):
            continue  # a close at market is already on its way
        stops = [o for o in engine.open_orders.values()
                 if o.bot == position.bot and o.symbol == position.symbol and o.leg is OrderLeg.STOP_LOSS]
        if any(o.amount >= position.contracts for o in stops):
            continue
        report.found.append(f"{position.symbol}: position of {position.contracts} contracts without a full stop")
        await engine._replace_stop(position, engine.markets[position.symbol], now)
        report.repaired.append(f"{position.symbol}: stop-loss at {position.stop_loss} placed again")
    sink.emit(ReconcileReported(now, report.as_dict()))
    if report.clean:
        # A fresh start has nothing to check: keep the console quiet then.
        log.log(logging.INFO if report.positions or report.open_orders else logging.DEBUG, "%s", report.text())
    else:
        log.warning("%s", report.text())
    return report


def _orphan_position(engine: Engine, bot: str, symbol: str, side: Side, contracts: Decimal, entry: Decimal, now: int):
    """A throw-away Position for an exchange position the bot did not know (to close it)."""
    from trading.models import Position

    return Position(position_id=f"reconcile|{symbol}|{now}", bot=bot, symbol=symbol, side=side,
                    contracts=contracts, initial_contracts=contracts, entry_price=entry, opened_ms=now,
                    stop_loss=entry, take_profit_1=entry, take_profit_2=entry,
                    leverage=engine.bots[bot].profile.leverage if bot in engine.bots else 1)
