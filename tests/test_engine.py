"""Engine flows on the real simulated exchange, through the one order path (SPEC O-9): the order
gateway over the venue and the fill tracker that books what the venue announces — entry →
brackets (E-1, O-3), TP1 moves the stop's size, SL streak (R-2), daily loss (R-3), pause (R-7),
score threshold (S-11/Z-4), S-13, and the order gate."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from trading.domain.config import (
    AccountConfig,
    BotProfile,
    PaperConfig,
    RegimeRiskMultipliers,
    TradingConfig,
)
from trading.engine.core import Engine
from trading.domain.events import EventBuffer, SignalEvaluated
from trading.domain.filters import FilterConfig
from trading.adapters.leverage_tiers import load_margin_brackets
from trading.adapters.marketdata import default_data_dir, load_candles
from trading.domain.models import ExitReason, OrderLeg, OrderType, Side
from trading.ports import ReplayClock
from trading.adapters.order_gateway import OrderGateway
from trading.adapters.simulated import SimulatedExchange
from trading.app.reconcile import FillTracker
from trading.domain.strategy import SignalCheck

SYMBOL = "XRP/USDT:USDT"
# These tests follow orders and positions, not the F-4 safety layer: let every warm candle pass
# the median comparisons, the per-symbol cooldown and the hourly entry cap (tested in
# test_filters.py and test_f4_cooldown_and_f1_spread_are_enforced_by_the_engine below).
# The warm-up candles leave XRP in a choppy regime; sizing tests pin the S-12 factor to 1
# (test_s12_choppy_regime_sizes_down covers it).
NEUTRAL_REGIME = RegimeRiskMultipliers(choppy=D(1))
FLOW_FILTERS = FilterConfig(volume_vs_median=0, atr_vs_median=0, min_seconds_between_entries=0,
                            max_entries_per_hour=1000, min_atr_pct=0.05)
NOON = 1_749_988_800_000  # 2025-06-15T12:00Z, inside trading hours
STRONG = SignalCheck(Side.LONG, 4.0, ("rsi", "macd", "volume", "atr"), True)


class Harness:
    """An engine behind the order gateway on the simulated exchange, fills booked by the fill
    tracker (the path every mode trades through), with a controllable clock."""

    def __init__(self, markets, account=None, slippage="0", bots=None, balance="1000", preset="safe", **profile):
        self.clock = ReplayClock(NOON)
        self.buffer = EventBuffer()
        profile.setdefault("filters", FLOW_FILTERS)
        profile.setdefault("regime_risk", NEUTRAL_REGIME)
        bots = bots or (BotProfile(symbols=(SYMBOL,), trading_hours_utc=(0, 24),
                                   blackout_hours_utc=(0, 0), **profile),)
        config = TradingConfig(bots=bots, account=AccountConfig(**(account or {})), preset=preset,
                               paper=PaperConfig(slippage_pct=D(slippage)))
        self.exchange = SimulatedExchange({SYMBOL: markets[SYMBOL]}, D(balance), D(slippage), self.clock)
        self.changed: list[str] = []
        self.exchange.on_change = self.changed.append
        self.gateway = OrderGateway(self.exchange)
        self.engine = Engine(config=config, markets={SYMBOL: markets[SYMBOL]}, exchange=self.gateway,
                             clock=self.clock, sink=self.buffer,
                             brackets=load_margin_brackets(default_data_dir(), [SYMBOL]))  # liquidation prices
        self.tracker = FillTracker(self.engine, self.gateway)
        self.feed = self.engine.feeds[(SYMBOL, "5m")]
        self.bot = next(iter(self.engine.bots.values()))

    async def start(self):
        await self.engine.start()
        self.engine.tick(self.clock.now_ms())
        # Warm indicators and the F-2/F-4 market stats on real XRP candles (data/README.md).
        series = load_candles(default_data_dir(), SYMBOL, "5m")
        for i in range(300):
            self.engine.warm(self.feed, series.high[i], series.low[i], series.close[i], series.volume[i])

    async def enter(self, price=2.0, check=STRONG):
        self.feed.last_close = price
        return await self.engine.try_enter(self.bot, self.feed, check)

    async def book(self):
        """The fill tracker books what the venue announced (as the replay does)."""
        changed, self.changed[:] = list(self.changed), []
        await self.tracker.book(changed)

    async def candle(self, o, h, low, c):
        """Next 5m candle: fills at its open, then triggers on its high/low."""
        self.clock.current_ms += 300_000
        ts = self.clock.current_ms
        self.exchange.fill_pending(SYMBOL, ts, o)
        await self.book()
        while True:
            fill = self.exchange.next_trigger(SYMBOL, ts, o, h, low)
            await self.book()
            if fill is None:
                break
        self.feed.last_close = c

    def position(self):
        return self.engine.positions.get(("main", SYMBOL))

    def brackets(self):
        return sorted((o for o in self.engine.open_orders.values() if o.reduce_only), key=lambda o: o.leg.value)

    def closed(self):
        return [e.position for e in self.buffer.events if type(e).__name__ == "PositionChanged" and not e.position.is_open]


@pytest.fixture
async def harness(markets):
    h = Harness(markets)
    await h.start()
    return h


async def test_e1_entry_places_sl_tp1_tp2_reduce_only_brackets(harness):
    """E-1 / O-3: after the entry fill, SL for all, TP1 for the tier's 70 %, TP2 for the rest."""
    evaluation = await harness.enter(2.0)
    assert evaluation.passed and evaluation.blocked_by == ""
    await harness.candle(2.0, 2.001, 1.999, 2.0)
    position = harness.position()
    assert position.entry_price == D("2.0")
    assert position.stop_loss == D("1.984")  # 2.0 × (1 − 0.8 %)
    assert position.take_profit_1 == D("2.012")  # + 0.6 %
    assert position.take_profit_2 == D("2.024")  # + 1.2 %
    by_leg = {o.leg: o for o in harness.brackets()}
    assert by_leg[OrderLeg.STOP_LOSS].type is OrderType.STOP_MARKET
    assert by_leg[OrderLeg.STOP_LOSS].amount == position.contracts
    assert by_leg[OrderLeg.TP1].amount == (position.contracts * D("0.7")).quantize(D("0.1"), rounding="ROUND_DOWN")
    assert by_leg[OrderLeg.TP1].amount + by_leg[OrderLeg.TP2].amount == position.contracts
    assert all(o.reduce_only for o in by_leg.values())
    # Z-1: 1000 × 0.75 % / 0.8 % = 937.5 notional → 468.7 XRP at 2.0 (step 0.1)
    assert position.contracts == D("468.7")


async def test_e1_tp1_partial_close_then_stop_follows_the_remaining_size(harness):
    """E-1: TP1 closes its share; the stop is re-placed for what is left; TP resets R-2."""
    await harness.enter(2.0)
    await harness.candle(2.0, 2.0, 2.0, 2.0)
    full = harness.position().contracts
    await harness.candle(2.01, 2.015, 2.005, 2.012)  # touches TP1 2.012 only
    position = harness.position()
    assert position.tp1_done
    assert position.contracts == full - D("328")  # 70 % of 468.7 floored to 0.1 = 328.0
    assert position.realised_pnl == (D("2.012") - D("2.0")) * D("328")
    (stop,) = [o for o in harness.brackets() if o.leg is OrderLeg.STOP_LOSS]  # replaced, not added
    assert stop.amount == position.contracts


async def test_e1_tp2_closes_the_rest_and_books_the_trade(harness):
    await harness.enter(2.0)
    await harness.candle(2.0, 2.0, 2.0, 2.0)
    await harness.candle(2.01, 2.03, 2.005, 2.025)  # TP1 then TP2 in one candle
    assert harness.position() is None
    (trade,) = harness.closed()
    assert trade.exit_reason is ExitReason.TP2
    assert trade.realised_pnl == (D("2.012") - 2) * D("328") + (D("2.024") - 2) * D("140.7")
    assert harness.brackets() == []  # no orphan brackets left on the exchange
    assert await harness.exchange.fetch_open_orders() == []
    balance = await harness.exchange.fetch_balance()
    assert balance == D(1000) + trade.net_pnl  # the ledger and the exchange agree


async def test_r2_two_stop_losses_halt_entries_for_the_day(harness):
    """R-2: 2 stop-losses in a row → SL_STREAK; entries denied until the next UTC day."""
    for _ in range(2):
        await harness.enter(2.0)
        await harness.candle(2.0, 2.0, 2.0, 2.0)
        await harness.candle(1.99, 1.99, 1.98, 1.98)  # through the 1.984 stop
    state = harness.engine.risk_states["main"]
    assert state.sl_streak == 2 and state.halted_reason == "SL_STREAK"
    assert [t.exit_reason for t in harness.closed()] == [ExitReason.STOP_LOSS] * 2
    denied = await harness.enter(2.0)
    assert not denied.passed and denied.blocked_by == "SL_STREAK"
    harness.clock.current_ms = NOON + 86_400_000  # next UTC day
    harness.engine.tick(harness.clock.current_ms)
    assert (await harness.enter(2.0)).passed


async def test_r3_daily_loss_limit_stops_entries(markets):
    """R-3: a loss ≥ 2 % of day-start equity (here one 2 % stop) halts the day."""
    h = Harness(markets, stop_loss_pct=D("2.5"), risk_pct=D("2"), sl_streak_limit=5)
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    await h.candle(1.94, 1.94, 1.9, 1.9)
    assert h.engine.risk_states["main"].halted_reason == "DAILY_LOSS_LIMIT"
    assert (await h.enter(2.0)).blocked_by == "DAILY_LOSS_LIMIT"


async def test_r7_paused_symbol_takes_no_entry(harness):
    harness.engine.set_paused("main", SYMBOL, True)
    evaluation = await harness.enter(2.0)
    assert evaluation.blocked_by == "SYMBOL_PAUSED"
    assert harness.engine.open_orders == {}


async def test_s11_z4_score_below_tier_minimum_is_blocked_and_recorded(harness):
    """S-11 / Z-4: at 1000 equity the tier needs 3.6; a 3.0 candidate is recorded, not traded."""
    weak = SignalCheck(Side.SHORT, 3.0, ("macd", "volume", "atr"), True)
    evaluation = await harness.enter(2.0, weak)
    assert evaluation.blocked_by == "SCORE_BELOW_MIN"
    recorded = [e.evaluation for e in harness.buffer.events if isinstance(e, SignalEvaluated)]
    assert recorded == [evaluation]  # S-13: every evaluated signal is recorded


async def test_r1_one_position_per_symbol_and_max_positions(harness):
    await harness.enter(2.0)
    assert (await harness.enter(2.0)).blocked_by == "POSITION_OPEN"  # pending entry counts


async def test_short_position_brackets_mirror(harness):
    await harness.enter(2.0, SignalCheck(Side.SHORT, 4.0, ("rsi", "volume"), True))
    await harness.candle(2.0, 2.0, 2.0, 2.0)
    position = harness.position()
    assert position.side is Side.SHORT
    assert position.stop_loss == D("2.016") and position.take_profit_2 == D("1.976")
    await harness.candle(2.01, 2.02, 2.0, 2.02)
    assert harness.closed()[0].exit_reason is ExitReason.STOP_LOSS
    assert harness.closed()[0].net_pnl < 0


async def lose(h, price=2.0):
    await h.enter(price)
    await h.candle(price, price, price, price)
    await h.candle(price * 0.99, price * 0.99, price * 0.985, price * 0.985)  # through the stop


async def win(h, price=2.0):
    await h.enter(price)
    await h.candle(price, price, price, price)
    await h.candle(price * 1.005, price * 1.015, price * 1.004, price * 1.013)  # TP1 and TP2


async def test_r6_three_stop_losses_blacklist_the_symbol_for_120_minutes(markets):
    """R-6: the 3rd stop-loss on a symbol pauses it 120 min (R-2 set out of the way)."""
    h = Harness(markets, sl_streak_limit=10, account={"daily_loss_limit_pct": D(50), "daily_loss_hard_limit_pct": D(50)})
    await h.start()
    for _ in range(3):
        await lose(h)
    entry = h.engine.blacklist[("main", SYMBOL)]
    assert entry.blocked_until_ms == h.clock.now_ms() + 120 * 60_000
    denied = await h.enter(2.0)
    assert denied.blocked_by == "SYMBOL_BLACKLISTED"
    h.clock.current_ms += 119 * 60_000
    assert (await h.enter(2.0)).blocked_by == "SYMBOL_BLACKLISTED"
    h.clock.current_ms += 2 * 60_000
    assert (await h.enter(2.0)).passed


async def test_r4_daily_profit_factor_below_one_after_ten_trades_stops_the_day(markets):
    """R-4: profit factor < 1.0 after ≥ 10 trades that day stops entries."""
    h = Harness(markets, sl_streak_limit=50, blacklist_stop_losses=50,
                account={"daily_loss_limit_pct": D(90), "daily_loss_hard_limit_pct": D(90), "drawdown_pause_pct": D(90),
                         "drawdown_reduce_pct": D(90)})
    await h.start()
    for outcome in (win, lose, lose, win, lose, lose, lose, win, lose):
        await outcome(h)
    assert h.engine.risk_states["main"].trades_today == 9
    assert (await h.enter(2.0)).passed  # 9 trades: R-4 not armed yet
    await h.candle(2.0, 2.0, 2.0, 2.0)
    await h.candle(1.98, 1.98, 1.97, 1.97)
    state = h.engine.risk_states["main"]
    assert state.trades_today == 10 and state.profit_factor_today < 1
    denied = await h.enter(2.0)
    assert denied.blocked_by == "DAILY_PROFIT_FACTOR"
    assert h.engine.risk_states["main"].halted_reason == "DAILY_PROFIT_FACTOR"


@pytest.mark.parametrize("peak, stage, blocked_by", [
    ("1080", "NONE", ""),       # 80 quote below, but 8 % of 1080 = 86.40 is the greater threshold
    ("1100", "REDUCE", ""),     # 100 ≥ max(8 % = 88, 50) → risk × 0.5
    ("1170", "REDUCE", ""),     # 170 < max(15 % = 175.50, 100): not paused yet
    ("1180", "PAUSE", "DRAWDOWN_PAUSE"),  # 180 ≥ max(15 % = 177, 100) → no entries
])
async def test_r5_drawdown_stages_at_the_greater_of_percent_and_quote(harness, peak, stage, blocked_by):
    """R-5 at SPEC's numbers on a 1000 account: reduce at the greater of 8 % or 50 quote below
    the peak, pause at the greater of 15 % or 100 quote."""
    harness.engine.book.account = replace(harness.engine.account, peak_equity=D(peak))
    assert harness.engine.drawdown_stage() == stage
    evaluation = await harness.enter(2.0)
    assert evaluation.blocked_by == blocked_by
    if stage == "REDUCE":
        (entry,) = harness.engine.open_orders.values()
        assert entry.amount == D("234.3")  # half of the 468.7 contracts a clean account gets


async def test_r10_position_without_exchange_stop_is_closed_at_once(markets):
    """R-10 / O-6: the exchange rejects the stop (-2021 would immediately trigger) → the
    position is closed at market at once and an alert is raised."""
    h = Harness(markets, slippage="0.02", stop_loss_pct=D("0.01"))
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)  # fills at 2.0004; a stop at 2.0001 is above the price
    assert h.position() is not None
    (close,) = h.brackets()  # no stop, no take-profit: only the reduce-only market close
    assert close.type is OrderType.MARKET and close.leg is OrderLeg.CLOSE
    alerts = [e for e in h.buffer.events if type(e).__name__ == "Alert"]
    assert [a.kind for a in alerts] == ["NO_STOP"]
    await h.candle(2.0, 2.0, 2.0, 2.0)
    assert h.position() is None
    assert h.closed()[0].exit_reason is ExitReason.NO_STOP


async def test_r9_risk_never_rises_during_a_losing_streak(markets):
    """R-9: after a stop-loss the next entry at the same price is never larger."""
    h = Harness(markets, sl_streak_limit=5)
    await h.start()
    await h.enter(2.0)
    first = next(iter(h.engine.open_orders.values())).amount
    await h.candle(2.0, 2.0, 2.0, 2.0)
    await h.candle(1.98, 1.98, 1.97, 1.97)
    await h.enter(2.0)
    second = next(o for o in h.engine.open_orders.values() if not o.reduce_only).amount
    assert second < first


async def test_b1_two_bots_never_hold_the_same_symbol(markets):
    """B-1: the exchange nets one position per symbol, so a second bot is refused it."""
    common = dict(symbols=(SYMBOL,), trading_hours_utc=(0, 24), blackout_hours_utc=(0, 0), filters=FLOW_FILTERS)
    h = Harness(markets, bots=(BotProfile(name="A", **common), BotProfile(name="B", **common)))
    await h.start()
    feed = h.feed
    assert [b.name for b in feed.bots] == ["A", "B"]
    feed.last_close = 2.0
    assert (await h.engine.try_enter(h.engine.bots["A"], feed, STRONG)).passed
    denied = await h.engine.try_enter(h.engine.bots["B"], feed, STRONG)
    assert denied.blocked_by == "SYMBOL_HELD_BY_OTHER_BOT"


async def test_e6_reactive_entry_retries_limit_blocked_candidate(markets):
    """E-6 with two symbols on one bot and room for one position."""
    sol = "SOL/USDT:USDT"
    clock = ReplayClock(NOON)
    buffer = EventBuffer()
    mk = {SYMBOL: markets[SYMBOL], sol: markets[sol]}
    profile = BotProfile(symbols=(SYMBOL, sol), trading_hours_utc=(0, 24), blackout_hours_utc=(0, 0),
                         max_positions=1, max_positions_experienced=1, filters=FLOW_FILTERS)
    exchange = SimulatedExchange(mk, D(1000), D(0), clock)
    engine = Engine(config=TradingConfig(bots=(profile,)), markets=mk, exchange=exchange, clock=clock, sink=buffer)
    await engine.start()
    engine.tick(NOON)
    bot = engine.bots["main"]
    feeds = {s: engine.feeds[(s, "5m")] for s in (SYMBOL, sol)}
    for symbol, feed in feeds.items():
        series = load_candles(default_data_dir(), symbol, "5m")
        for i in range(300):
            engine.warm(feed, series.high[i], series.low[i], series.close[i], series.volume[i])
    feeds[SYMBOL].last_close, feeds[sol].last_close = 2.0, 150.0
    assert (await engine.try_enter(bot, feeds[SYMBOL], STRONG)).passed
    for fill in exchange.fill_pending(SYMBOL, NOON, 2.0):
        await engine.on_fill(fill)
    clock.current_ms = NOON + 300_000
    blocked = await engine.try_enter(bot, feeds[sol], STRONG)
    assert blocked.blocked_by == "MAX_POSITIONS"
    assert engine.pending_entries() == 0
    # At this same instant the XRP stop is hit: the SOL candidate is retried at once.
    fill = exchange.next_trigger(SYMBOL, clock.current_ms, 1.98, 1.98, 1.97)
    await engine.on_fill(fill)
    assert ("main", SYMBOL) not in engine.positions
    assert engine.pending_entries() == 1
    (entry,) = [o for o in engine.open_orders.values() if o.leg is OrderLeg.ENTRY]
    assert entry.symbol == sol


async def test_f4_cooldown_and_f1_spread_are_enforced_by_the_engine(markets):
    """F-4: a second entry on a symbol within the cooldown is refused; F-1: the simulated book
    is one tick wide, so a limit below one XRP tick refuses every entry."""
    h = Harness(markets, filters=FilterConfig(volume_vs_median=0, atr_vs_median=0, min_atr_pct=0.05,
                                              min_seconds_between_entries=3600))
    await h.start()
    await lose(h)
    assert (await h.enter(2.0)).blocked_by == "ENTRY_COOLDOWN"
    tight = Harness(markets, filters=FilterConfig(max_spread_pct=0.001, volume_vs_median=0, atr_vs_median=0))
    await tight.start()
    assert (await tight.enter(2.0)).blocked_by == "SPREAD_TOO_WIDE"  # 0.0001 / 2.0 = 0.005 %


async def test_e10_ladder_adds_within_caps_and_brackets_follow(markets):
    """E-10: with the ladder on, the position starts at the Z-3 base size, adds the first rung
    after ≥ 60 s while PnL ≥ the threshold, averages the entry and re-places the stop for the
    whole new size; Z-2's position cap stops the ladder (R-9: never beyond caps)."""
    from trading.domain.ladder import ladder_policy
    from trading.domain.profiles import base_position_size, symbol_multiplier
    from trading.domain.regime import Regime

    h = Harness(markets, ladder=True, timeout_minutes=0)
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    position = h.position()
    base = base_position_size(D(1000)) * symbol_multiplier(SYMBOL) * 5  # margin × 0.8 × leverage
    assert position.contracts * D(2) <= base  # started at the base size, not the Z-1 size
    first = position.contracts
    base = base_position_size(h.engine.account.balance) * symbol_multiplier(SYMBOL) * 5  # after the entry fee
    policy = ladder_policy(h.engine.balance_profile_name(), h.feed.regime.regime or Regime.RANGING)
    h.clock.current_ms += 300_000
    h.feed.last_close = 2.004
    await h.engine.manage_positions(h.feed)  # rung 1 goes out as a market order
    (add,) = [o for o in h.engine.open_orders.values() if o.leg is OrderLeg.ADD]
    assert add.amount == (base * policy.multipliers[0] / D("2.004")).quantize(D("0.1"), rounding="ROUND_DOWN")
    await h.candle(2.004, 2.005, 2.003, 2.004)
    position = h.position()
    assert position.additions == 1 and position.contracts == first + add.amount
    assert position.entry_price == (first * D(2) + add.amount * D("2.004")) / position.contracts
    (stop,) = [o for o in h.brackets() if o.leg is OrderLeg.STOP_LOSS]  # the old stop is gone
    assert stop.amount == position.contracts  # the stop covers the whole new size
    assert {o.client_order_id for o in await h.exchange.fetch_open_orders()} == {
        o.client_order_id for o in h.brackets()
    }
    # Keep laddering until a cap says no; the position never exceeds 20 % × equity × leverage.
    for _ in range(8):
        h.clock.current_ms += 300_000
        await h.engine.manage_positions(h.feed)
        await h.candle(2.004, 2.005, 2.003, 2.004)
    position = h.position()
    assert 2 <= position.additions <= policy.max_additions  # the ladder stops at its limit...
    assert position.contracts * D("2.004") <= D(1000) * D("0.2") * 5  # ...or at the Z-2 position cap
    h.clock.current_ms += 300_000
    await h.engine.manage_positions(h.feed)
    assert not [o for o in h.engine.open_orders.values() if o.leg is OrderLeg.ADD]


async def test_e10_r9_no_addition_to_a_losing_position(markets):
    """R-9 / E-10: below the PnL threshold (−1.5 % on margin for small) nothing is added."""
    h = Harness(markets, ladder=True)
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    h.clock.current_ms += 300_000
    h.feed.last_close = 1.993  # −0.35 % price = −1.75 % on margin at 5×
    await h.engine.manage_positions(h.feed)
    assert not [o for o in h.engine.open_orders.values() if o.leg is OrderLeg.ADD]


async def test_r2_a_take_profit_resets_the_sl_streak(markets):
    """R-2: SL, then a take-profit, then SL → streak 1, entries still allowed."""
    h = Harness(markets, account={"daily_loss_limit_pct": D(50), "daily_loss_hard_limit_pct": D(50)})
    await h.start()
    await lose(h)
    assert h.engine.risk_states["main"].sl_streak == 1
    await win(h)
    assert h.engine.risk_states["main"].sl_streak == 0
    await lose(h)
    state = h.engine.risk_states["main"]
    assert state.sl_streak == 1 and state.halted_reason == ""
    assert (await h.enter(2.0)).passed


async def test_e4_timeout_closes_a_flat_position_after_60_minutes(harness):
    """E-4 in the engine: held ≥ 60 min with PnL < +1 % on margin → reduce-only market close,
    booked as TIMEOUT at the next open."""
    await harness.enter(2.0)
    await harness.candle(2.0, 2.0, 2.0, 2.0)
    for _ in range(11):  # 55 minutes: not yet
        await harness.candle(2.0, 2.001, 1.999, 2.0)
        await harness.engine.manage_positions(harness.feed)
    assert not [o for o in harness.engine.open_orders.values() if o.leg is OrderLeg.CLOSE]
    await harness.candle(2.0, 2.001, 1.999, 2.0)
    await harness.engine.manage_positions(harness.feed)  # 60 minutes held
    await harness.candle(2.0, 2.001, 1.999, 2.0)
    (trade,) = harness.closed()
    assert trade.exit_reason is ExitReason.TIMEOUT
    assert harness.brackets() == []


async def test_e3_auto_profit_closes_all_before_tp1(markets):
    """E-3 in the engine: TP1 not hit and PnL ≥ +3 % on margin → close everything."""
    h = Harness(markets, take_profit_1_pct=D(5), take_profit_2_pct=D(6))
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    h.feed.last_close = 2.011  # +0.55 % price = +2.75 % on margin at 5×: not yet
    await h.engine.manage_positions(h.feed)
    assert not [o for o in h.engine.open_orders.values() if o.leg is OrderLeg.CLOSE]
    h.feed.last_close = 2.013  # +3.25 % on margin
    await h.engine.manage_positions(h.feed)
    await h.candle(2.013, 2.014, 2.012, 2.013)
    (trade,) = h.closed()
    assert trade.exit_reason is ExitReason.AUTO_PROFIT and trade.net_pnl > 0


async def test_z4_scaling_preset_caps_trades_per_day_in_the_engine(markets):
    """Z-4 scaling: a 200-quote account (tier 120–300) takes at most 8 trades per UTC day."""
    h = Harness(markets, balance="200", preset="scaling", account={"daily_loss_limit_pct": D(50), "daily_loss_hard_limit_pct": D(50)})
    await h.start()
    for _ in range(8):
        await win(h)
    assert h.engine.risk_states["main"].trades_today == 8
    assert (await h.enter(2.0)).blocked_by == "MAX_TRADES_PER_DAY"


async def test_z4_never_btc_below_500_equity_in_the_engine(markets):
    """Z-4: the engine refuses BTC to a 400-quote account, whatever the score."""
    btc = "BTC/USDT:USDT"
    clock = ReplayClock(NOON)
    profile = BotProfile(symbols=(btc,), trading_hours_utc=(0, 24), blackout_hours_utc=(0, 0), filters=FLOW_FILTERS)
    exchange = SimulatedExchange({btc: markets[btc]}, D(400), D(0), clock)
    engine = Engine(config=TradingConfig(bots=(profile,)), markets={btc: markets[btc]}, exchange=exchange,
                    clock=clock, sink=EventBuffer())
    await engine.start()
    engine.tick(NOON)
    feed = engine.feeds[(btc, "5m")]
    feed.last_close = 105000.0
    evaluation = await engine.try_enter(engine.bots["main"], feed, STRONG)
    assert evaluation.blocked_by == "PAIR_NOT_IN_TIER"


async def test_s12_choppy_regime_sizes_down(markets):
    """S-12 used by sizing: in a choppy regime the risk per trade is × 0.7 (never above 1)."""
    from trading.domain.regime import Regime

    h = Harness(markets, regime_risk=RegimeRiskMultipliers())
    await h.start()
    assert h.feed.regime.regime is Regime.CHOPPY  # the real XRP warm-up candles are choppy
    await h.enter(2.0)
    (entry,) = h.engine.open_orders.values()
    assert entry.amount == D("328.1")  # 0.7 × 937.5 notional / 2.0 = 328.125, floored to 0.1


async def test_o3_paper_limit_entries_at_the_close_fill_as_makers_or_expire(tmp_path, data_dir):
    """O-3 ``entry_order_style = "limit"`` on the paper replay of real candles: every entry is a
    LIMIT at the signal candle's close less the offset (floored to the tick size); the filled
    ones paid the maker fee at exactly their limit; the others were cancelled after the timeout
    with the reason stored, and nothing of them is left on the simulated exchange."""
    from bot.runtime import build_paper_runtime
    from tests.test_risk_chat import OPEN_END, two_bots
    from trading.domain.config import OrdersConfig
    from trading.adapters.marketdata import load_candles
    from trading.domain.models import OrderLeg, OrderStatus, OrderType, Side
    from trading.domain.oms import limit_entry_price

    config = two_bots().model_copy(update={"orders": OrdersConfig(
        entry_order_style="limit", limit_entry_offset_pct=D("0.05"), limit_entry_timeout_s=600)})
    runtime = await build_paper_runtime(config=config, db_path=tmp_path / "limit.db", data_dir=data_dir,
                                       end_ms=OPEN_END)
    try:
        await runtime.replay()
        await runtime.persister.flush()
        entries = [o for o in await runtime.store.orders.list_closed() if o.leg is OrderLeg.ENTRY]
        entries += [o for o in await runtime.store.orders.list_open() if o.leg is OrderLeg.ENTRY]
        assert entries and all(o.type is OrderType.LIMIT and o.price is not None for o in entries)
        filled = [o for o in entries if o.status is OrderStatus.CLOSED]
        expired = [o for o in entries if o.status is OrderStatus.CANCELED]
        assert filled and expired, (len(filled), len(expired))
        assert all("limit entry unfilled after 600 s" in o.reason for o in expired)
        for order in entries:  # placed at the signal candle's close (the 5m candle ending at created_ms)
            series = load_candles(data_dir, order.symbol, "5m")
            i = list(series.timestamp).index(order.created_ms - 300_000)
            side = Side.LONG if order.side.value == "buy" else Side.SHORT
            close = D(repr(series.close[i]))
            assert order.price == limit_entry_price(runtime.engine.markets[order.symbol], side, close, D("0.05"))
            assert (order.price < close) == (side is Side.LONG)
        fills = {f.client_order_id: f for f in await runtime.store.fills.list(since_ms=0)}
        for order in filled:
            fill = fills[order.client_order_id]
            market = runtime.engine.markets[order.symbol]
            assert fill.price == order.price
            assert fill.fee == fill.amount * market.contract_size * fill.price * market.maker_fee
        open_ids = {o.client_order_id for o in await runtime.exchange.fetch_open_orders()}
        assert not open_ids & {o.client_order_id for o in expired}
    finally:
        await runtime.close()
