"""Presets safe / scaling (SPEC Z-4) and the pair universe by tier."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from trading.domain.config import (
    BotProfile,
    StrategyConfig,
    load_trading_config,
)
from trading.domain.presets import effective_limits, pair_allowed

PROFILE = BotProfile()


def test_z4_safe_preset_uses_profile_risk_and_tier_scores():
    """safe: Z-1 at 0.75 %, 5×, 2 positions; tier gives min score and TP1 share."""
    limits = effective_limits("safe", PROFILE, D(400), closed_trades=0)
    assert (limits.risk_pct, limits.leverage, limits.max_positions) == (D("0.75"), 5, 2)
    assert limits.min_score == 3.3 and limits.tp1_share_pct == D(75)
    assert limits.sl_streak_limit == 2 and limits.max_trades_per_day is None


def test_z4_safe_preset_allows_a_third_position_after_100_trades():
    assert effective_limits("safe", PROFILE, D(400), closed_trades=99).max_positions == 2
    assert effective_limits("safe", PROFILE, D(400), closed_trades=100).max_positions == 3


@pytest.mark.parametrize("equity, risk, positions, score, trades", [
    (D(200), D("2.3"), 2, 3.0, 8),
    (D(400), D("2.0"), 3, 3.3, 12),
    (D(1000), D("1.8"), 5, 3.6, 18),
    (D(2000), D("1.5"), 7, 3.6, 18),
])
def test_z4_scaling_preset_follows_the_tier_table(equity, risk, positions, score, trades):
    """scaling: risk/trade, max positions, min score, trades/day from the tier (lower end);
    R-2 streak limit 3."""
    limits = effective_limits("scaling", BotProfile(leverage=20), equity, closed_trades=0)
    assert limits.risk_pct == risk and limits.max_positions == positions
    assert limits.min_score == score and limits.max_trades_per_day == trades
    assert limits.sl_streak_limit == 3
    assert limits.leverage == limits.tier.max_leverage  # the tier caps leverage (8/8/6/5)


def test_profile_overrides_tier_score_and_tp1_share():
    profile = BotProfile(tp1_share_pct=D(50), strategy=StrategyConfig(min_score=2.5))
    limits = effective_limits("scaling", profile, D(1000), 0)
    assert limits.min_score == 2.5 and limits.tp1_share_pct == D(50)


def test_z4_never_btc_or_eth_below_500_equity_in_any_preset():
    for preset in ("safe", "scaling"):
        assert not pair_allowed(preset, "BTC/USDT:USDT", D(499))
        assert not pair_allowed(preset, "ETH/USDC:USDC", D(300))
    assert pair_allowed("safe", "BTC/USDT:USDT", D(500))
    assert not pair_allowed("scaling", "BTC/USDT:USDT", D(700))  # scaling: ≥ 750
    assert pair_allowed("scaling", "BTC/USDT:USDT", D(750))


def test_z4_scaling_universe_adds_sol_link_dot_from_300():
    assert not pair_allowed("scaling", "SOL/USDT:USDT", D(299))
    assert pair_allowed("scaling", "SOL/USDT:USDT", D(300))
    assert pair_allowed("scaling", "XRP/USDT:USDT", D(150))  # low-price alts at any tier
    assert pair_allowed("safe", "SOL/USDT:USDT", D(150))


def test_scaling_preset_from_toml(tmp_path):
    path = tmp_path / "scaling.toml"
    path.write_text('preset = "scaling"\n[[bots]]\nname = "s"\nsymbols = ["XRP/USDT:USDT"]\n', encoding="utf-8")
    config = load_trading_config(path)
    assert config.preset == "scaling" and config.bots[0].name == "s"


async def test_z4_summary_shows_the_presets_sl_streak_limit(tmp_path, data_dir):
    """R-2 / Z-4: /summary shows the streak limit the preset applies (3 in scaling), not the
    profile's default 2."""
    from bot.runtime import build_paper_runtime
    from trading.domain.config import TradingConfig

    config = TradingConfig(preset="scaling")
    runtime = await build_paper_runtime(config=config, db_path=tmp_path / "s.db", data_dir=data_dir,
                                       end_ms=1_748_908_800_000 + 6 * 3_600_000)
    try:
        await runtime.replay()
        summary = await runtime.service.summary()
    finally:
        await runtime.close()
    assert summary.sl_streak_limit == 3
