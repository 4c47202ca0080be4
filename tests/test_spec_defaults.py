"""Every SPEC default of sections 4 (sizing), 5 (RiskGuard) and 7 (exits) pinned in the shipped
presets — the default `safe` config, `examples/scaling.toml`, `examples/launch.toml` and the
B-1 profiles of `examples/optiscalp.toml` — so changing one (R-8's 50 % to 100 %, say) fails a
test; and the engine paths that only bind with several symbols on a small account (R-8)."""

from __future__ import annotations

from decimal import ROUND_DOWN
from decimal import Decimal as D
from pathlib import Path

import pytest

from tests.test_engine import FLOW_FILTERS, NEUTRAL_REGIME, NOON, STRONG
from trading.adapters.leverage_tiers import load_margin_brackets
from trading.adapters.marketdata import default_data_dir, load_candles, load_ccxt_markets, market_from_ccxt
from trading.adapters.order_gateway import OrderGateway
from trading.adapters.simulated import SimulatedExchange
from trading.domain.config import AccountConfig, BotProfile, TradingConfig, load_trading_config
from trading.domain.events import EventBuffer
from trading.domain.exits import atr_targets, partial_close_floor
from trading.domain.filters import FilterConfig
from trading.domain.ladder import ladder_policy
from trading.domain.launch import (
    EQUITY_FOR_3_POSITIONS,
    EQUITY_FOR_7X,
    FULL_AFTER_TRADES,
    FULL_PROFIT_FACTOR,
    LAUNCH_STAGES,
    RISK_1PCT_PROFIT_FACTOR,
    STEP_BACK_PROFIT_FACTOR,
    STEP_BACK_WINDOW,
    WINS_FOR_STAGE_2,
)
from trading.domain.models import Side
from trading.domain.presets import EXPERIENCED_AFTER_TRADES, SCALING_SL_STREAK_LIMIT, effective_limits, pair_allowed
from trading.domain.profiles import BALANCE_PROFILES, SYMBOL_MULTIPLIERS
from trading.domain.sizing import EQUITY_TIERS, size_position
from trading.engine.core import Engine
from trading.ports import ReplayClock

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAFE = TradingConfig()
SCALING = load_trading_config(EXAMPLES / "scaling.toml")
LAUNCH = load_trading_config(EXAMPLES / "launch.toml")
OPTISCALP = load_trading_config(EXAMPLES / "optiscalp.toml")
SHIPPED = {"safe": SAFE, "scaling": SCALING, "launch": LAUNCH, "optiscalp": OPTISCALP}


@pytest.mark.parametrize("name", SHIPPED)
def test_section_5_account_rules_in_every_shipped_preset(name):
    """R-3 daily loss 2 % (hard limit 3 %), R-5 reduce at the greater of 8 % / 50 quote (× 0.5)
    and pause at the greater of 15 % / 100 quote, R-8 total margin ≤ 50 % of equity, Z-2
    position ≤ 20 % of equity × leverage, R-9 tier hysteresis 2 %, E-7 taker fee 0.05 %, the
    liquidation alert at 20 % of the way."""
    account = SHIPPED[name].account
    assert (account.daily_loss_limit_pct, account.daily_loss_hard_limit_pct) == (2, 3)
    assert (account.drawdown_reduce_pct, account.drawdown_reduce_quote) == (8, 50)
    assert (account.drawdown_pause_pct, account.drawdown_pause_quote) == (15, 100)
    assert account.drawdown_risk_multiplier == D("0.5")
    assert account.max_total_margin_pct == 50 and account.max_position_size_pct == 20
    assert account.tier_hysteresis_pct == 2 and account.taker_fee_pct == D("0.05")
    assert account.liquidation_alert_pct == 20


@pytest.mark.parametrize("name", ["safe", "scaling", "launch"])
def test_section_5_and_7_bot_rules_in_the_shipped_presets(name):
    """R-2 SL streak 2 (3 in `scaling`), R-4 profit factor 1.0 after 10 trades, R-6 3 stop-losses
    → 120 min, S-5 hours 08–20 and never 02–06, E-1 TP 0.6 / 1.2 % and SL 0.8 %, E-2 steps, E-3
    AutoProfit 3 % on margin, E-4 timeout 60 min below +1 %, Z-1 risk 0.75 % at 5× with 2
    positions (3 after 100 trades, Z-4 `safe`)."""
    config = SHIPPED[name]
    bot = config.bots[0]
    limits = effective_limits(config.preset, bot, D(400), 0)
    assert limits.sl_streak_limit == (SCALING_SL_STREAK_LIMIT if name == "scaling" else 2)
    assert SCALING_SL_STREAK_LIMIT == 3
    assert (bot.min_profit_factor, bot.min_trades_for_profit_factor) == (D("1.0"), 10)
    assert (bot.blacklist_stop_losses, bot.blacklist_minutes) == (3, 120)
    assert bot.trading_hours_utc == (8, 20) and bot.blackout_hours_utc == (2, 6)
    assert (bot.take_profit_1_pct, bot.take_profit_2_pct, bot.stop_loss_pct) == (D("0.6"), D("1.2"), D("0.8"))
    assert bot.step_tp_quote == (D("0.10"), D("0.20"), D("0.30"), D("0.40"))
    assert bot.step_tp_shares_pct == (20, 20, 30, 30)
    assert bot.auto_profit_pct == 3
    assert (bot.timeout_minutes, bot.timeout_min_pnl_pct) == (60, 1)
    if name == "safe":
        assert (bot.risk_pct, bot.leverage, bot.max_positions) == (D("0.75"), 5, 2)
        assert (bot.max_positions_experienced, EXPERIENCED_AFTER_TRADES) == (3, 100)
        assert effective_limits("safe", bot, D(400), 100).max_positions == 3


def test_section_4_tier_table_balance_profiles_multipliers_and_pairs():
    """Z-4 table (the scaling preset takes the lower end of each range), Z-3 profiles and
    multipliers, the pair universe (never BTC/ETH below 500; ≥ 750 in `scaling`; SOL/LINK/DOT
    from 300)."""
    rows = [(t.name, t.min_equity, t.risk_pct, t.max_positions, t.allocation_pct, t.max_leverage, t.min_score,
             t.tp1_share_pct, t.max_trades_per_day) for t in EQUITY_TIERS]
    assert rows == [
        ("120-300", 0, D("2.3"), 2, 40, 8, 3.0, 80, 8),
        ("300-750", 300, D("2.0"), 3, 30, 8, 3.3, 75, 12),
        ("750-1500", 750, D("1.8"), 5, 20, 6, 3.6, 70, 18),
        ("1500+", 1500, D("1.5"), 7, 15, 5, 3.6, 70, 18),
    ]
    assert [(p.name, p.min_balance, p.threshold, p.size_at_min, p.size_at_max) for p in BALANCE_PROFILES] == [
        ("micro", 100, 500, 30, 50), ("small", 500, 1500, 50, 150), ("medium", 1500, 3000, 150, 200),
        ("large", 3000, 10000, 200, 300)]
    assert dict(SYMBOL_MULTIPLIERS) == {"BTC": D("1.2"), "ETH": D("1.0"), "SOL": D("0.9"), "DOGE": D("0.8"),
                                        "XRP": D("0.8")}
    assert not pair_allowed("safe", "BTC/USDT:USDT", D("499.99")) and pair_allowed("safe", "ETH/USDT:USDT", D(500))
    assert not pair_allowed("scaling", "BTC/USDT:USDT", D("749.99")) and pair_allowed("scaling", "BTC/USDT:USDT", D(750))
    assert not pair_allowed("scaling", "SOL/USDT:USDT", D("299.99")) and pair_allowed("scaling", "SOL/USDT:USDT", D(300))
    assert FilterConfig().min_notional_floor == 5  # F-5, the floor Z-2 never goes below


def test_z1_spec_example_400_equity_0_75_risk_0_8_stop_375_notional_75_margin(markets):
    """Z-1's worked example at SPEC's defaults: equity 400, risk 0.75 % = 3, SL 0.8 % → notional
    375, margin 75 at 5× (XRP at 2.5: 150 contracts), inside every Z-2 / R-8 cap."""
    account, bot = AccountConfig(), BotProfile()
    size = size_position(market=markets["XRP/USDT:USDT"], equity=D(400), price=D("2.5"),
                         stop_loss_pct=bot.stop_loss_pct, risk_pct=bot.risk_pct, leverage=bot.leverage, used_margin=D(0),
                         max_total_margin_pct=account.max_total_margin_pct,
                         max_position_size_pct=account.max_position_size_pct)
    assert (size.contracts, size.notional, size.margin, size.risk, size.capped_by) == (150, 375, 75, 3, "")


def test_z5_launch_stages():
    """Z-5 (seed 003 §4): 1 position at 0.5 %; 2 after 10 wins; 0.75 %, 5×, 2 positions after 50
    trades with PF > 1.3; 3 positions above 500; 7× above 600; 1 % when PF > 1.5 over 50 trades;
    PF < 1.0 over the last 20 steps back."""
    assert [(s.risk_pct, s.leverage, s.max_positions) for s in LAUNCH_STAGES] == [
        (D("0.5"), 5, 1), (D("0.5"), 5, 2), (D("0.75"), 5, 2), (D("0.75"), 5, 3), (D("0.75"), 7, 3), (D(1), 7, 3)]
    assert (WINS_FOR_STAGE_2, FULL_AFTER_TRADES, FULL_PROFIT_FACTOR) == (10, 50, D("1.3"))
    assert (EQUITY_FOR_3_POSITIONS, EQUITY_FOR_7X, RISK_1PCT_PROFIT_FACTOR) == (500, 600, D("1.5"))
    assert (STEP_BACK_WINDOW, STEP_BACK_PROFIT_FACTOR) == (20, 1)
    assert LAUNCH.preset == "launch" and LAUNCH.account.starting_balance == 400


def test_section_7_exit_defaults():
    """E-1 ATR TP1/TP2/TP3 at 1.0 / 1.5 / 2.0 ATR with 50 / 30 / 20 %; E-5 floors 5 (3 micro /
    small, 10 large); E-10 ladders default / small / large and the regime factors."""
    targets = atr_targets(D(100), Side.LONG, D(1))
    assert [(price, share) for price, share in targets] == [(D(101), 50), (D("101.5"), 30), (D(102), 20)]
    assert [partial_close_floor(p) for p in ("micro", "small", "medium", "large")] == [3, 3, 5, 10]
    trending = ladder_policy("medium", "trending")
    assert [m / D("1.1") for m in trending.multipliers] == [D("1.0"), D("0.7"), D("0.5"), D("0.3"), D("0.2")]
    assert (trending.max_additions, trending.min_interval_s, trending.min_pnl_pct) == (5, 60, -2)
    small = ladder_policy("small", "ranging")
    assert ([m / D("0.9") for m in small.multipliers], small.max_additions, small.min_interval_s,
            small.min_pnl_pct) == ([D("1.0"), D("0.6"), D("0.4")], 3, 60, D("-1.5"))
    large = ladder_policy("large", "trending")
    assert (large.max_additions, large.min_interval_s, large.min_pnl_pct) == (7, 30, -3)
    assert [m / D("1.1") for m in large.multipliers] == [D("1.0"), D("0.8"), D("0.6"), D("0.4"), D("0.3"), D("0.2"),
                                                         D("0.15")]
    choppy = ladder_policy("large", "choppy")
    assert (choppy.max_additions, choppy.min_pnl_pct) == (3, -1)
    assert [m / D("0.7") for m in choppy.multipliers] == [D("1.0"), D("0.8"), D("0.6")]


def test_b1_optiscalp_profiles():
    """B-1: A (BTC, ETH, ADA; TP1 0.3 %, SL 0.6 %, timeout 60 min, 2 positions), B (SOL, DOGE, LTC;
    0.25 % / 0.5 %), C (XRP, AVAX, POL; 0.2 % / 0.4 %; 3 positions), micro-swing (TP2 only, hold ≤ 4 h)."""
    bots = {b.name: b for b in OPTISCALP.bots}
    a, b, c, swing = bots["A"], bots["B"], bots["C"], bots["swing"]
    assert (a.take_profit_1_pct, a.stop_loss_pct, a.timeout_minutes, a.max_positions) == (D("0.3"), D("0.6"), 60, 2)
    assert [s.split("/")[0] for s in a.symbols] == ["BTC", "ETH", "ADA"]
    assert (b.take_profit_1_pct, b.stop_loss_pct) == (D("0.25"), D("0.5"))
    assert (c.take_profit_1_pct, c.stop_loss_pct, c.max_positions) == (D("0.2"), D("0.4"), 3)
    assert (swing.tp1_share_pct, swing.max_hold_minutes) == (0, 240)


# ------------------------------------------------------------------- R-8 in the engine
SYMBOLS = ("XRP/USDT:USDT", "ADA/USDT:USDT", "DOGE/USDT:USDT")


async def test_r8_a_small_scaling_account_caps_the_third_entry_at_the_margin_left(tmp_path):
    """R-8 with SPEC's numbers on the engine's one order path: a 400 account on the `scaling`
    preset (tier 300–750: 2.0 % risk, 8×, 3 positions) and three symbols. Each entry wants 8 /
    0.8 % = 1000 quote; Z-2 caps a position at 20 % of equity × 8 = 640 quote (80 margin), so
    two entries hold 160 of the 200 quote (50 % of equity) R-8 allows: the third gets the 40
    left (320 quote at 8×), not another 640."""
    raw = load_ccxt_markets(default_data_dir())
    markets = {s: market_from_ccxt(raw[s]) for s in SYMBOLS}
    clock = ReplayClock(NOON)
    profile = BotProfile(name="scale", symbols=SYMBOLS, leverage=8, trading_hours_utc=(0, 24), blackout_hours_utc=(0, 0),
                         filters=FLOW_FILTERS, regime_risk=NEUTRAL_REGIME)
    config = SCALING.model_copy(update={"bots": (profile,)})
    venue = SimulatedExchange(markets, D(400), D(0), clock)
    engine = Engine(config=config, markets=markets, exchange=OrderGateway(venue), clock=clock, sink=EventBuffer(),
                    brackets=load_margin_brackets(default_data_dir(), SYMBOLS))
    await engine.start()
    engine.tick(clock.now_ms())
    bot = engine.bots["scale"]
    notionals = []
    for symbol in SYMBOLS:
        feed = engine.feeds[(symbol, "5m")]
        series = load_candles(default_data_dir(), symbol, "5m")
        for i in range(300):
            engine.warm(feed, series.high[i], series.low[i], series.close[i], series.volume[i])
        assert (await engine.try_enter(bot, feed, STRONG)).passed, symbol
        pending = engine.pending_entry("scale", symbol)
        price = D(repr(feed.last_close))
        notionals.append((pending.order.amount * price, price, markets[symbol]))
    equity = D(400)
    cap = equity * config.account.max_position_size_pct / 100 * 8  # Z-2: 640
    for notional, price, market in notionals[:2]:
        assert cap - price * market.step_size < notional <= cap
    third, price, market = notionals[2]
    room = (equity * config.account.max_total_margin_pct / 100 - sum(n for n, *_ in notionals[:2]) / 8) * 8
    assert room < D(330)  # the 50 % of R-8 binds: 200 − 2 × 80 = 40 quote of margin
    expected = (room / price / market.step_size).to_integral_value(ROUND_DOWN) * market.step_size * price
    assert third == expected and third <= room < cap / 2 + 1  # + the first two entries' rounding to their steps
    assert engine.used_margin() <= equity * config.account.max_total_margin_pct / 100
