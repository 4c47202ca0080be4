"""SPEC O-9 "what is tested is what trades": a paper replay sends every order through the order
gateway over the simulated venue, books every fill with the fill tracker, verifies every stop
(O-6) and reconciles (O-5) with the same objects demo and live use — and so a stop the venue
drops in the middle of a backtest is put back as it would be on Binance."""

from __future__ import annotations

from tests.stack import replayed
from trading.adapters.order_gateway import OrderGateway
from trading.app.reconcile import FillTracker, Reconciler, StopVerifier
from trading.domain.models import OrderLeg, OrderStatus

DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z, first bundled candle
END = DAY0 + 65 * 3_600_000  # two positions open at the end, brackets resting (test_reconcile)


async def test_o9_paper_trades_through_the_gateway_fill_tracker_verifier_and_reconciler(tmp_path, data_dir):
    runtime = await replayed(tmp_path / "paper.db", data_dir, END)
    try:
        gateway, venue = runtime.engine.exchange, runtime.exchange
        assert isinstance(gateway, OrderGateway) and gateway.exchange is venue and runtime.gateway is gateway
        supervisor = runtime.supervisor
        assert isinstance(supervisor.tracker, FillTracker) and isinstance(supervisor.verifier, StopVerifier)
        assert isinstance(supervisor.reconciler, Reconciler)
        entries = [f for f in await runtime.store.fills.list() if f.leg is OrderLeg.ENTRY]
        assert len(entries) >= 5
        # Every entry fill got its O-6 check on the replay clock, and each stop rested.
        assert supervisor.verifier.verified == len(entries) and supervisor.verifier.replaced == 0
        # The periodic reconciliation (O-5) ran along the replay and found nothing to repair.
        assert supervisor.reconciler.runs > len(entries)
        assert [r.action for r in await runtime.store.audit.list()].count("RECONCILE") == 1  # the start's
        # The book the engine keeps is the venue's.
        local = {o.client_order_id for o in runtime.engine.open_orders.values()}
        assert local == {o.client_order_id for o in await venue.fetch_open_orders()} and local
    finally:
        await runtime.close()


class DropAStop:
    """At ``at_ms`` the venue cancels the stop of the first open position on its own and says
    so on its order-update stream (as Binance's demo venue does with conditional orders)."""

    def __init__(self, runtime, at_ms: int) -> None:
        self.runtime, self.next_due_ms, self.dropped = runtime, at_ms, None

    async def due(self, now_ms: int) -> None:
        engine, venue = self.runtime.engine, self.runtime.exchange
        self.next_due_ms = now_ms + 1  # until a position is open: ask again at the next candle
        if self.dropped is None and engine.positions:
            self.next_due_ms = 2 ** 62
            (bot, symbol), _position = next(iter(engine.positions.items()))
            stop = engine.stop_of(bot, symbol)
            await venue.cancel_order(stop.client_order_id, symbol)
            venue.on_change(stop.client_order_id)
            self.dropped = (bot, symbol, stop.client_order_id, now_ms)


async def test_o9_r10_a_stop_the_venue_drops_mid_replay_is_placed_again_in_the_same_step(tmp_path, data_dir):
    from bot.runtime import build_paper_runtime
    from trading.domain.config import TradingConfig

    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "paper.db", data_dir=data_dir,
                                        end_ms=END)
    try:
        hook = DropAStop(runtime, DAY0 + 24 * 3_600_000)
        await runtime.replay(clock_hook=hook)
        assert hook.dropped is not None
        bot, symbol, lost, at_ms = hook.dropped
        assert (await runtime.store.orders.get(lost)).status is OrderStatus.CANCELED
        stored = [*await runtime.store.orders.list_open(symbol=symbol), *await runtime.store.orders.list_closed()]
        replacements = [o for o in stored
                        if o.symbol == symbol and o.leg is OrderLeg.STOP_LOSS and o.created_ms >= at_ms]
        assert replacements and min(o.created_ms for o in replacements) <= at_ms + 5 * 60_000
        # The fill tracker booked the venue's cancel; the supervisor's R-10 check (as in live)
        # placed the stop again in that same candle step.
        assert runtime.supervisor.stops_placed == 1
    finally:
        await runtime.close()
