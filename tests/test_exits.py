"""Exit policies (SPEC E-1..E-5) on real Binance USDⓈ-M market rules from the bundled data."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from trading.domain.exits import (
    ExitAction,
    StepwiseConfig,
    apply_floor,
    atr_targets,
    auto_profit,
    fixed_targets,
    partial_close_floor,
    pnl_pct_on_margin,
    split_contracts,
    stepwise_action,
    timeout,
)
from trading.adapters.marketdata import default_data_dir, load_ccxt_markets, market_from_ccxt
from trading.domain.models import Position, Side

RAW = load_ccxt_markets(default_data_dir())
BTC = market_from_ccxt(RAW["BTC/USDT:USDT"])  # step 0.001, min qty 0.001
SOL = market_from_ccxt(RAW["SOL/USDT:USDT"])  # step 1
XRP = market_from_ccxt(RAW["XRP/USDT:USDT"])  # step 0.1
T0 = 1_700_000_000_000  # epoch ms UTC
MIN = 60_000


def _position(market=XRP, side=Side.LONG, contracts=D(100), entry=D("2.5"), **overrides) -> Position:
    args = dict(
        position_id="p1", bot="main", symbol=market.symbol, side=side, contracts=contracts,
        initial_contracts=contracts, entry_price=entry, opened_ms=T0, stop_loss=D(0),
        take_profit_1=D(0), take_profit_2=D(0), leverage=5,
    )
    args.update(overrides)
    return Position(**args)


def test_real_market_rules_are_what_the_tests_assume():
    """The bundled rules: BTC step 0.001, SOL step 1, XRP step 0.1 (E-1 split tests rely on them)."""
    assert (BTC.step_size, SOL.step_size, XRP.step_size) == (D("0.001"), D(1), D("0.1"))
    assert (BTC.min_qty, SOL.min_qty, XRP.min_qty) == (D("0.001"), D(1), D("0.1"))


# --- E-1 ---------------------------------------------------------------------------------------

def test_e1_atr_targets_long_at_1_1p5_2_atr_with_50_30_20():
    """SPEC E-1 ATR mode: TP1 = 1.0 ATR, TP2 = 1.5 ATR, TP3 = 2.0 ATR; shares 50/30/20 %."""
    assert atr_targets(D(100), Side.LONG, D(2)) == [(D(102), D(50)), (D(103), D(30)), (D(104), D(20))]


def test_e1_atr_targets_short_mirror_below_entry():
    """SPEC E-1: a short's targets are below the entry."""
    assert [p for p, _ in atr_targets(D("2.5"), Side.SHORT, D("0.02"))] == [D("2.48"), D("2.47"), D("2.46")]


@pytest.mark.parametrize("kwargs", [
    dict(atr=D(0)), dict(shares=(50, 30, 30)), dict(multiples=(1.0, 1.0, 2.0)), dict(multiples=(1.0, 2.0)),
])
def test_e1_atr_targets_reject_invalid_input(kwargs):
    """SPEC E-1: zero ATR, shares not summing to 100, non-ascending or mismatched multiples fail."""
    args = dict(entry=D(100), side=Side.LONG, atr=D(2)) | kwargs
    with pytest.raises(ValueError):
        atr_targets(**args)


def test_e1_fixed_targets_default_06_12_sl_08():
    """SPEC E-1 fixed levels: TP1 +0.6 %, TP2 +1.2 %, SL −0.8 % (long), mirrored for short."""
    assert fixed_targets(D("2.5"), Side.LONG) == (D("2.515"), D("2.53"), D("2.48"))
    assert fixed_targets(D("2.5"), Side.SHORT) == (D("2.485"), D("2.47"), D("2.52"))


def test_e1_split_btc_step_0001_remainder_on_last_leg():
    """SPEC E-1: 0.005 BTC by 50/30/20 → 0.002 / 0.001 / 0.002 (floors; remainder on the last)."""
    assert split_contracts(BTC, D("0.005"), (50, 30, 20)) == [D("0.002"), D("0.001"), D("0.002")]


def test_e1_split_sol_step_1_merges_leg_below_min_qty_into_last():
    """SPEC E-1: 3 SOL by 50/30/20 → 1 / 0 / 2: the 0.9 leg is below min qty and moves to the last."""
    assert split_contracts(SOL, D(3), (50, 30, 20)) == [D(1), D(0), D(2)]


def test_e1_split_xrp_tier_tp1_share_80():
    """SPEC E-1 with the Z-4 TP1 share 80 %: 150.3 XRP → 120.2 + 30.1."""
    assert split_contracts(XRP, D("150.3"), (80, 20)) == [D("120.2"), D("30.1")]


@pytest.mark.parametrize("market", [BTC, SOL, XRP], ids=lambda m: m.symbol)
def test_e1_split_never_loses_contracts_and_legs_are_placeable(market):
    """SPEC E-1: legs always sum to the position; each non-zero leg is ≥ min qty and on the step."""
    for n in range(1, 400):
        contracts = market.step_size * n
        legs = split_contracts(market, contracts, (50, 30, 20))
        assert sum(legs) == contracts
        for leg in legs:
            assert leg == 0 or (leg >= market.min_qty and leg % market.step_size == 0)


def test_e1_split_folds_legs_when_min_qty_exceeds_step():
    """SPEC E-1: with min qty 0.005 > step 0.001, 0.006 by 50/30/20 → everything on the last leg."""
    coarse = replace(BTC, min_qty=D("0.005"))
    assert split_contracts(coarse, D("0.006"), (50, 30, 20)) == [D(0), D(0), D("0.006")]
    assert split_contracts(coarse, D("0.011"), (50, 30, 20)) == [D("0.005"), D(0), D("0.006")]
    # a middle leg of 0.003 < 0.005 is dropped into the last one
    assert split_contracts(coarse, D("0.015"), (40, 20, 40)) == [D("0.006"), D(0), D("0.009")]
    # a remainder of 0.004 < 0.005 absorbs the leg before it
    assert split_contracts(coarse, D("0.02"), (50, 30, 20)) == [D("0.01"), D(0), D("0.01")]


# --- E-2 ---------------------------------------------------------------------------------------

def test_e2_below_first_step_does_nothing():
    """SPEC E-2: PnL 0.09 quote < first step 0.10 → no action, steps unchanged."""
    assert stepwise_action(_position(), D("0.09"), 0, XRP, D(5)) == (None, 0)


def test_e2_first_step_closes_20pct_of_initial():
    """SPEC E-2: +0.10 quote closes 20 % of the initial 100 XRP = 20 contracts (STEP_TP_1)."""
    action, done = stepwise_action(_position(), D("0.10"), 0, XRP, D(5))
    assert action == ExitAction("partial_close", D(20), "STEP_TP_1", action.detail)
    assert done == 1


def test_e2_second_step_share_applies_to_initial_contracts():
    """SPEC E-2: after step 1 (80 left), +0.20 closes another 20 % of the INITIAL 100 = 20."""
    position = _position(contracts=D(80), initial_contracts=D(100))
    action, done = stepwise_action(position, D("0.20"), 1, XRP, D(5))
    assert (action.kind, action.contracts, action.reason, done) == ("partial_close", D(20), "STEP_TP_2", 2)


def test_e2_jump_over_several_steps_closes_their_shares_together():
    """SPEC E-2: PnL jumps straight to +0.35 → steps 1–3 (20+20+30 = 70 %) at once."""
    action, done = stepwise_action(_position(), D("0.35"), 0, XRP, D(5))
    assert (action.contracts, action.reason, done) == (D(70), "STEP_TP_3", 3)


def test_e2_last_step_closes_what_remains():
    """SPEC E-2: the last step (+0.40) closes everything left, whatever the share says."""
    position = _position(contracts=D("30.3"), initial_contracts=D(100))
    action, done = stepwise_action(position, D("0.40"), 3, XRP, D(5))
    assert (action.kind, action.contracts, action.reason, done) == ("close_all", D("30.3"), "STEP_TP_4", 4)
    assert stepwise_action(position, D(5), 4, XRP, D(5)) == (None, 4)


def test_e2_short_position_profit_steps():
    """SPEC E-2 on a short: 3 SOL short, +0.10 → 20 % of 3 floors to 0 on step 1 → nothing to close yet;
    +0.20 (40 % = 1.2 → 1 SOL) closes 1."""
    position = _position(SOL, Side.SHORT, D(3), D(150))
    assert stepwise_action(position, D("0.10"), 0, SOL, D(3)) == (None, 1)
    action, done = stepwise_action(position, D("0.20"), 1, SOL, D(3))
    assert (action.kind, action.contracts, done) == ("partial_close", D(1), 2)


def test_e2_e5_skipped_step_is_caught_up_by_the_next():
    """SPEC E-2 + E-5: 8 XRP at 2.5: step 1 = 1.6 XRP ≈ 4 quote < floor 5 → skip (counter advances);
    step 2 then closes the cumulative 40 % = 3.2 XRP ≈ 8 quote."""
    position = _position(contracts=D(8))
    action, done = stepwise_action(position, D("0.10"), 0, XRP, D(5))
    assert (action.kind, action.contracts, action.reason, done) == ("skip", D(0), "PARTIAL_BELOW_FLOOR", 1)
    action, done = stepwise_action(position, D("0.20"), 1, XRP, D(5))
    assert (action.kind, action.contracts, done) == ("partial_close", D("3.2"), 2)


def test_e2_e5_partial_worth_the_floor_is_sent():
    """SPEC E-2 + E-5: 20 % of 10 XRP = 2 XRP ≈ 5.02 quote at the mark (≥ floor 5) is sent."""
    action, _ = stepwise_action(_position(contracts=D(10)), D("0.10"), 0, XRP, D(5))
    assert (action.kind, action.contracts) == ("partial_close", D(2))


def test_e2_e5_position_worth_less_than_floor_only_closes_at_last_step():
    """SPEC E-5: a 4-quote position is never partially closed; E-2's last step still closes it all."""
    position = _position(contracts=D("1.6"))
    action, _ = stepwise_action(position, D("0.30"), 0, XRP, D(5))
    assert (action.kind, action.reason) == ("skip", "PARTIAL_BELOW_FLOOR")
    action, _ = stepwise_action(position, D("0.40"), 3, XRP, D(5))
    assert (action.kind, action.contracts) == ("close_all", D("1.6"))


def test_e2_config_rejects_bad_steps():
    """SPEC E-2: steps must ascend and shares sum to 100 %; floats are accepted via str."""
    with pytest.raises(ValueError):
        StepwiseConfig(steps_quote=(0.2, 0.1), shares_pct=(50, 50))
    with pytest.raises(ValueError):
        StepwiseConfig(shares_pct=(20, 20, 30, 20))
    assert StepwiseConfig(steps_quote=(0.1, 0.3), shares_pct=(40, 60)).steps_quote == (D("0.1"), D("0.3"))


# --- E-3 / E-4 ---------------------------------------------------------------------------------

def test_e3_e4_pnl_pct_on_margin():
    """SPEC E-3/E-4: 150 XRP at 2.5, 5× → margin 75; mark 2.52 → +3 quote = +4 % on margin."""
    position = _position(contracts=D(150))
    assert pnl_pct_on_margin(position, D("2.52"), XRP.contract_size) == D(4)
    assert pnl_pct_on_margin(replace(position, side=Side.SHORT), D("2.52"), D(1)) == D(-4)
    assert pnl_pct_on_margin(replace(position, contracts=D(0)), D("2.52"), D(1)) == D(0)


def test_e3_auto_profit_closes_all_at_3pct_before_tp1():
    """SPEC E-3: TP1 not hit and PnL ≥ +3 % on margin → close all (AUTO_PROFIT)."""
    action = auto_profit(_position(), D(3))
    assert (action.kind, action.contracts, action.reason) == ("close_all", D(100), "AUTO_PROFIT")
    assert auto_profit(_position(), D("2.99")) is None


def test_e3_auto_profit_not_after_tp1():
    """SPEC E-3: once TP1 filled, AutoProfit no longer applies."""
    assert auto_profit(_position(tp1_done=True), D(10)) is None


def test_e4_timeout_after_60_min_below_1pct():
    """SPEC E-4: held ≥ 60 min and PnL < +1 % → close all (TIMEOUT)."""
    action = timeout(_position(), T0 + 60 * MIN, D("0.99"))
    assert (action.kind, action.contracts, action.reason) == ("close_all", D(100), "TIMEOUT")


def test_e4_no_timeout_before_60_min_or_at_1pct():
    """SPEC E-4: 59.999 min held, or PnL exactly +1 %, keeps the position."""
    assert timeout(_position(), T0 + 60 * MIN - 1, D(-5)) is None
    assert timeout(_position(), T0 + 90 * MIN, D(1)) is None


def test_e4_max_hold_4h_for_swing_closes_whatever_the_pnl():
    """SPEC E-4 / B-1: swing profile max hold 240 min → MAX_HOLD even in profit; not a minute sooner."""
    swing = dict(hold_minutes=None, max_hold_minutes=240)
    action = timeout(_position(), T0 + 240 * MIN, D(50), **swing)
    assert (action.kind, action.reason) == ("close_all", "MAX_HOLD")
    assert timeout(_position(), T0 + 240 * MIN - 1, D(0), **swing) is None


# --- E-5 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile, floor", [
    ("micro", D(3)), ("small", D(3)), ("medium", D(5)), ("default", D(5)), ("large", D(10)), ("Large", D(10)),
])
def test_e5_partial_close_floor_by_balance_profile(profile, floor):
    """SPEC E-5: floor 5 quote, 3 for micro/small, 10 for large."""
    assert partial_close_floor(profile) == floor


def test_e5_unknown_profile_is_an_error():
    """SPEC E-5: a typo in the profile name fails loudly instead of picking a floor."""
    with pytest.raises(ValueError):
        partial_close_floor("lage")


def test_e5_apply_floor_skips_partial_worth_less_than_floor():
    """SPEC E-5: 1.9 XRP × 2.5 = 4.75 quote < 5 → skip; 2 XRP = 5 quote → sent unchanged."""
    small = ExitAction("partial_close", D("1.9"), "STEP_TP_1")
    skipped = apply_floor(small, D("2.5"), D(1), D(250), D(5))
    assert (skipped.kind, skipped.contracts, skipped.reason) == ("skip", D(0), "PARTIAL_BELOW_FLOOR")
    ok = ExitAction("partial_close", D(2), "STEP_TP_1")
    assert apply_floor(ok, D("2.5"), D(1), D(250), D(5)) is ok


def test_e5_position_below_floor_is_held_to_its_bracket():
    """SPEC E-5: a position worth 9 < 10 (large) is not partially closed, even for a 9-quote partial."""
    action = ExitAction("partial_close", D("3.6"), "STEP_TP_1")
    skipped = apply_floor(action, D("2.5"), D(1), D(9), D(10))
    assert (skipped.kind, skipped.reason) == ("skip", "PARTIAL_BELOW_FLOOR")
    assert "held to its bracket" in skipped.detail


def test_e5_full_closes_are_never_floored():
    """SPEC E-5 applies to partial closes only: a close_all worth 1 quote is still sent."""
    action = ExitAction("close_all", D("0.4"), "TIMEOUT")
    assert apply_floor(action, D("2.5"), D(1), D(1), D(5)) is action
