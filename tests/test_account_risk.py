"""Risk rules that protect a small account (issue 14), on the engine's one order path (the order
gateway over the simulated exchange, fills booked by the fill tracker): the R-3 hard daily limit,
the R-5 drawdown stages at seed 000's thresholds with a latched pause, R-9 no martingale (tier
hysteresis, risk and leverage never rise while losing), and the Z-5 launch ramp. Every number
is SPEC's default, read from the shipped config, never chosen by the test."""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_DOWN
from decimal import Decimal as D

from bot.notices import Category, NoticeBuilder
from tests.test_engine import NOON, SYMBOL, Harness, lose, win
from trading.domain.audit import entries_for_events
from trading.domain.config import AccountConfig
from trading.domain.events import OrderRefused, RiskNotice
from trading.domain.launch import LAUNCH_STAGES
from trading.domain.models import Account, ExitReason, OrderLeg, Side
from trading.domain.reasons import DrawdownStage, ReasonCode
from trading.domain.risk import drawdown_stage
from trading.domain.sizing import EQUITY_TIERS

DEFAULTS = AccountConfig()
DAY_MS = 86_400_000


def notices(h: Harness, action: str) -> list[RiskNotice]:
    return [e for e in h.buffer.events if isinstance(e, RiskNotice) and e.action == action]


def set_equity(h: Harness, balance: D, peak: D | None = None) -> None:
    """The account's wallet balance (no open position: equity = balance) and peak equity."""
    account = h.engine.account
    h.engine.book.account = Account(balance, account.peak_equity if peak is None else peak, account.updated_ms)


# -------------------------------------------------------------------------
def test_r3_spec_defaults_daily_limit_2_hard_limit_3():
    """R-3: entries stop at 2 % of day-start equity; the hard limit, 3 %, closes everything."""
    assert DEFAULTS.daily_loss_limit_pct == 2 and DEFAULTS.daily_loss_hard_limit_pct == 3


async def test_r3_hard_daily_limit_closes_every_position_and_halts_to_the_next_utc_day(markets):
    """R-3: an open loss at 2.996 % of day-start equity stops entries but keeps the position; at
    3.000 % (SPEC's hard limit) every position is closed at market through the normal close path
    (reduce-only, exit reason DAILY_LOSS), the account is halted until the next UTC day, the
    stop cannot be lifted by /resume, and the step is audited and announced."""
    # 4 % risk with a 10 % stop: a 400-quote position whose stop sits below the hard limit.
    h = Harness(markets, risk_pct=D(4), stop_loss_pct=D(10), timeout_minutes=0)
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    position = h.position()
    assert position.contracts == D(200) and position.entry_price == D("2.0")
    day_start = h.engine.risk_states["main"].day_start_equity
    assert day_start == D(1000)
    await h.candle(1.86, 1.86, 1.8502, 1.8502)  # 200 × 0.1498 = 29.96 quote = 2.996 %
    await h.engine.manage_positions(h.feed)
    assert h.engine.risk_states["main"].halted_reason == ReasonCode.DAILY_LOSS_LIMIT
    assert h.engine.close_in_flight("main", SYMBOL) is False and h.position() is not None
    await h.candle(1.851, 1.851, 1.85, 1.85)  # 200 × 0.15 = 30 quote = 3.000 % of 1000
    await h.engine.manage_positions(h.feed)
    (close,) = [o for o in h.engine.open_orders.values() if o.leg is OrderLeg.CLOSE]
    assert close.reduce_only and close.amount == D(200)
    assert h.engine.risk_states["main"].halted_reason == ReasonCode.DAILY_LOSS_HARD_LIMIT
    (notice,) = notices(h, "DAILY_HARD_LIMIT")
    assert notice.why["limit_pct"] == DEFAULTS.daily_loss_hard_limit_pct
    assert [r.action for r in entries_for_events(h.buffer.events) if r.action == "DAILY_HARD_LIMIT"] == [
        "DAILY_HARD_LIMIT"]
    assert any(n.category is Category.RISK and "Daily hard loss limit" in n.text.render()[0]
               for n in NoticeBuilder().build(h.buffer.events))
    await h.candle(1.85, 1.85, 1.85, 1.85)  # the close fills at the next open
    assert h.position() is None
    assert h.closed()[-1].exit_reason is ExitReason.DAILY_LOSS
    assert h.engine.clear_risk_stop("main") == ""  # /resume cannot lift it
    assert (await h.enter(2.0)).blocked_by == ReasonCode.DAILY_LOSS_HARD_LIMIT
    assert await h.engine.submit_entry("main", SYMBOL, Side.LONG, D(10), price=D(2)) is None
    h.clock.current_ms = NOON - NOON % DAY_MS + DAY_MS + 9 * 3_600_000  # 09:00 UTC the next day
    h.engine.tick(h.clock.current_ms)
    assert (await h.enter(2.0)).passed


# -------------------------------------------------------------------------
def test_r5_seed_000_thresholds_at_400_equity():
    """R-5 at SPEC's numbers: a 400 account reduces at the greater of 8 % (32) or 50 quote and
    pauses at the greater of 15 % (60) or 100 quote below its peak; risk × 0.5 when reduced."""
    assert (DEFAULTS.drawdown_reduce_pct, DEFAULTS.drawdown_reduce_quote) == (8, 50)
    assert (DEFAULTS.drawdown_pause_pct, DEFAULTS.drawdown_pause_quote) == (15, 100)
    assert DEFAULTS.drawdown_risk_multiplier == D("0.5")
    stages = {}
    for equity in ("350.01", "350", "300.01", "300"):
        stages[equity] = drawdown_stage(
            D(400), D(equity), reduce_pct=DEFAULTS.drawdown_reduce_pct, reduce_quote=DEFAULTS.drawdown_reduce_quote,
            pause_pct=DEFAULTS.drawdown_pause_pct, pause_quote=DEFAULTS.drawdown_pause_quote)
    assert stages == {"350.01": DrawdownStage.NONE, "350": DrawdownStage.REDUCE,
                      "300.01": DrawdownStage.REDUCE, "300": DrawdownStage.PAUSE}


async def test_r5_at_400_a_50_quote_drawdown_halves_the_risk_and_100_pauses_until_a_confirmed_resume(markets):
    """R-5 acceptance: at 400 peak equity, 49.99 below → full size; 50 below → half the size
    (risk × 0.5); 100 below → no entry. The pause is latched: equity coming back does not lift
    it; a confirmed /resume does, and a new pause is measured from the equity at the resume."""
    h = Harness(markets, balance="400")
    await h.start()
    profile = h.bot.profile

    async def entry_contracts(balance: str) -> D | None:
        h.clock.current_ms += 60_000  # a new signal, a new client order id (O-2)
        set_equity(h, D(balance), D(400))
        await h.engine.guard.watch()
        evaluation = await h.enter(2.0)
        pending = h.engine.pending_entry("main", SYMBOL)
        await h.engine.cancel_pending_entries()
        return pending.order.amount if evaluation.passed else evaluation.blocked_by

    def z1(equity: str, multiplier: D = D(1)) -> D:  # Z-1 at SPEC's 0.75 % and 0.8 % stop, XRP step 0.1
        notional = D(equity) * profile.risk_pct / 100 * multiplier / (profile.stop_loss_pct / 100)
        return (notional / 2).quantize(D("0.1"), rounding=ROUND_DOWN)

    assert (profile.risk_pct, profile.stop_loss_pct) == (D("0.75"), D("0.8"))
    assert await entry_contracts("350.01") == z1("350.01")
    assert await entry_contracts("350") == z1("350", DEFAULTS.drawdown_risk_multiplier)
    assert await entry_contracts("300.01") == z1("300.01", DEFAULTS.drawdown_risk_multiplier)
    assert await entry_contracts("300") == ReasonCode.DRAWDOWN_PAUSE
    (paused,) = notices(h, "DRAWDOWN_PAUSED")
    assert paused.why["equity"] == D(300) and paused.why["peak_equity"] == D(400)
    assert await entry_contracts("340") == ReasonCode.DRAWDOWN_PAUSE  # latched: recovering does not lift it
    refused = await h.engine.submit_entry("main", SYMBOL, Side.LONG, D(10), price=D(2))
    assert refused is None and [e.reason for e in h.buffer.events if isinstance(e, OrderRefused)][-1] \
        is ReasonCode.DRAWDOWN_PAUSE
    assert h.engine.resume_drawdown() is True  # the confirmed /resume
    assert notices(h, "DRAWDOWN_RESUMED")
    assert await entry_contracts("340") == z1("340", DEFAULTS.drawdown_risk_multiplier)  # still 60 below the peak
    assert await entry_contracts("240.01") == z1("240.01", DEFAULTS.drawdown_risk_multiplier)
    assert await entry_contracts("240") == ReasonCode.DRAWDOWN_PAUSE  # 100 below the resume's 340


# -------------------------------------------------------------------------
async def test_r9_equity_walks_down_two_tiers_risk_and_leverage_never_rise_then_up_with_hysteresis(markets):
    """R-9 with the `scaling` preset (Z-4 table: 1500+ risks 1.5 % at 5×, 750–1500 1.8 % at 6×,
    300–750 2.0 % at 8×): equity falls from 1600 through two tiers — the lower tiers' higher
    risk and leverage never apply, the entries keep the 1.5 % and 5× of the last entry at the
    peak. Back up, the tier changes only 2 % past a boundary (750 → up at 765, down below 735),
    so equity wandering around 750 does not flip it. Each change is audited and announced."""
    assert DEFAULTS.tier_hysteresis_pct == 2
    by_name = {t.name: t for t in EQUITY_TIERS}
    assert (by_name["1500+"].risk_pct, by_name["1500+"].max_leverage) == (D("1.5"), 5)
    assert (by_name["750-1500"].risk_pct, by_name["750-1500"].max_leverage) == (D("1.8"), 6)
    assert (by_name["300-750"].risk_pct, by_name["300-750"].max_leverage) == (D("2.0"), 8)
    h = Harness(markets, balance="1600", preset="scaling", leverage=8,
                account={"daily_loss_limit_pct": D(90), "daily_loss_hard_limit_pct": D(90),
                         "drawdown_reduce_pct": D(90), "drawdown_pause_pct": D(90),
                         "drawdown_reduce_quote": D(10_000), "drawdown_pause_quote": D(10_000)})
    await h.start()
    assert (await h.enter(2.0)).passed  # the entry at the peak: 1.5 %, 5×
    assert h.engine.pending_entry("main", SYMBOL).leverage == 5
    await h.engine.cancel_pending_entries()
    walk = []
    for equity in ("1600", "1480", "1460", "1000", "740", "700", "500"):
        set_equity(h, D(equity), D(1600))
        await h.engine.guard.watch()
        limits = h.engine.limits(h.bot.profile)
        walk.append((equity, limits.tier.name, limits.risk_pct, limits.leverage))
    assert [w[1] for w in walk] == ["1500+", "1500+", "750-1500", "750-1500", "750-1500", "300-750", "300-750"]
    risks, leverages = [w[2] for w in walk], [w[3] for w in walk]
    assert all(b <= a for a, b in zip(risks, risks[1:])) and set(risks) == {D("1.5")}
    assert all(b <= a for a, b in zip(leverages, leverages[1:])) and set(leverages) == {5}
    set_equity(h, D(700), D(1600))
    assert (await h.enter(2.0)).passed  # an entry at 700 goes out at 5×, not the tier's 8×
    assert h.engine.pending_entry("main", SYMBOL).leverage == 5
    await h.engine.cancel_pending_entries()
    before = len(notices(h, "TIER_CHANGED"))
    tiers = []
    for equity in ("740", "760", "740", "764.99", "765", "740", "736", "760", "735.01", "734.99", "760"):
        set_equity(h, D(equity), D(1600))
        await h.engine.guard.watch()
        tiers.append(h.engine.risk.tier(D(equity)).name)
    assert tiers == ["300-750", "300-750", "300-750", "300-750", "750-1500", "750-1500", "750-1500", "750-1500",
                     "750-1500", "300-750", "300-750"]
    changes = notices(h, "TIER_CHANGED")[before:]
    assert [(n.why["from"], n.why["to"]) for n in changes] == [("300-750", "750-1500"), ("750-1500", "300-750")]
    records = [r for r in entries_for_events(h.buffer.events) if r.action == "TIER_CHANGED"]
    assert len(records) == len(notices(h, "TIER_CHANGED")) == 4  # 1500+ → 750-1500 → 300-750 → up → down
    assert all(n.category is Category.RISK for n in NoticeBuilder().build(changes))


async def test_r9_a_losing_streak_holds_risk_at_its_last_value_even_at_the_peak(markets):
    """R-9: at the peak but after a losing trade the risk % and leverage of the last entry are a
    ceiling (here the launch ramp would give stage 3's 0.75 % — it stays at stage 2's 0.5 %)."""
    h = Harness(markets, balance="400", preset="launch")
    await h.start()
    assert (await h.enter(2.0)).passed
    await h.engine.cancel_pending_entries()
    assert h.engine.risk.account.ceiling("main") == (LAUNCH_STAGES[0].risk_pct, LAUNCH_STAGES[0].leverage)
    h.engine.risk.account = replace(h.engine.risk.account, loss_streak=1)
    h.engine.risk.ramp.stage = 3
    limits = h.engine.limits(h.bot.profile)
    assert limits.risk_pct == D("0.5") and limits.capped
    h.engine.risk.account = replace(h.engine.risk.account, loss_streak=0)  # streak over, at the peak
    assert h.engine.limits(h.bot.profile).risk_pct == D("0.75")


# ------------------------------------------------------------------------- Z-5
async def test_z5_launch_preset_stage_1_then_promotes_after_10_wins_and_steps_back_on_a_bad_run(markets):
    """Z-5 acceptance: the `launch` preset starts at stage 1 (one position at 0.5 % risk),
    promotes to stage 2 (two positions) after 10 winning trades, and a profit factor < 1.0 over
    the last 20 trades steps it back to stage 1 — each step audited (LAUNCH_STAGE_CHANGED) and
    announced in chat. Other day stops are set out of the way (they are tested elsewhere)."""
    h = Harness(markets, balance="400", preset="launch", sl_streak_limit=50, blacklist_stop_losses=50,
                min_trades_for_profit_factor=100, timeout_minutes=0,
                account={"daily_loss_limit_pct": D(50), "daily_loss_hard_limit_pct": D(50)})
    await h.start()
    limits = h.engine.limits(h.bot.profile)
    assert (limits.launch_stage, limits.max_positions, limits.risk_pct) == (1, 1, D("0.5"))
    for _ in range(10):
        await win(h)
    (promoted,) = notices(h, "LAUNCH_STAGE_CHANGED")
    assert (promoted.why["from"], promoted.why["to"], promoted.why["trade"]) == (1, 2, 10)
    assert h.engine.limits(h.bot.profile).max_positions == 2
    for _ in range(9):
        await lose(h)
    assert h.engine.risk.ramp.stage == 2  # 19 trades: no 20-trade window yet
    await lose(h)
    stepped = notices(h, "LAUNCH_STAGE_CHANGED")[1:]
    assert [(n.why["from"], n.why["to"], n.why["trade"]) for n in stepped] == [(2, 1, 20)]
    assert "profit factor" in stepped[0].why["reason"]
    assert h.engine.limits(h.bot.profile).max_positions == 1
    audited = [r.why["to"] for r in entries_for_events(h.buffer.events) if r.action == "LAUNCH_STAGE_CHANGED"]
    assert audited == [2, 1]
    texts = [n.text.render()[0] for n in NoticeBuilder().build(h.buffer.events) if n.category is Category.RISK]
    assert any("promoted to stage 2/6" in t for t in texts) and any("stepped back to stage 1/6" in t for t in texts)



# ------------------------------------------------------------- R-3 acceptance
async def test_r3_scaling_backtest_never_ends_a_utc_day_below_hard_limit_plus_one_positions_risk(tmp_path, data_dir):
    """R-3 acceptance on the bundled real candles with `examples/scaling.toml` (the `scaling`
    preset on a 400 account, 4 symbols, 5m, 21 days): no UTC day ends below −(the 3 % hard limit
    + the risk % of one position of the day's tier, 2.0 % at 300–750). The hard limit fires on
    the bundled data (its closes carry the DAILY_LOSS exit reason)."""
    from pathlib import Path

    from bot.runtime import build_paper_runtime
    from trading.domain.config import load_trading_config
    from trading.domain.events import RiskStateChanged
    from trading.domain.presets import effective_limits
    from trading.domain.sizing import equity_tier

    config = load_trading_config(Path(__file__).resolve().parent.parent / "examples" / "scaling.toml")
    assert config.preset == "scaling" and config.account.daily_loss_hard_limit_pct == DEFAULTS.daily_loss_hard_limit_pct
    starts: dict[str, D] = {}
    hard: list[RiskNotice] = []
    runtime = await build_paper_runtime(config=config, db_path=tmp_path / "bt.db", data_dir=data_dir)
    try:
        async def listen(events):
            for event in events:
                if isinstance(event, RiskStateChanged):
                    starts.setdefault(event.state.day, event.state.day_start_equity)
                elif isinstance(event, RiskNotice) and event.action == "DAILY_HARD_LIMIT":
                    hard.append(event)

        runtime.persister.add_listener(listen)
        await runtime.replay()
        await runtime.close_positions_at_end()
        end = runtime.engine.equity()
        trades = await runtime.store.positions.list_closed()
    finally:
        await runtime.close()
    days = sorted(starts)
    assert len(days) >= 21
    worst = []
    for i, day in enumerate(days):
        start = starts[day]
        close = starts[days[i + 1]] if i + 1 < len(days) else end
        one_position = effective_limits("scaling", config.bots[0], start, 0, tier=equity_tier(start)).risk_pct
        bound = -(config.account.daily_loss_hard_limit_pct + one_position)
        change = (close - start) / start * 100
        worst.append(change)
        assert change >= bound, f"{day}: {change:.2f} % < {bound} %"
    assert hard, "the hard limit never fired: the test would not see it fail"
    assert any(t.exit_reason is ExitReason.DAILY_LOSS for t in trades)
    assert min(worst) > -(config.account.daily_loss_hard_limit_pct + D("0.5"))  # measured: −3.01 %
