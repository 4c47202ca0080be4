"""Scaling ladder (SPEC E-10) within the caps (Z-2, R-8) and without martingale (R-9), on real
Binance USDⓈ-M market rules from the bundled data."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest

from trading.domain.ladder import (
    Addition,
    LadderDenied,
    LadderPolicy,
    LadderState,
    Regime,
    average_entry,
    ladder_policy,
    next_addition,
)
from trading.adapters.marketdata import default_data_dir, load_ccxt_markets, market_from_ccxt
from trading.domain.precision import min_notional

RAW = load_ccxt_markets(default_data_dir())
BTC = market_from_ccxt(RAW["BTC/USDT:USDT"])  # step 0.001, MIN_NOTIONAL 100
SOL = market_from_ccxt(RAW["SOL/USDT:USDT"])  # step 1
XRP = market_from_ccxt(RAW["XRP/USDT:USDT"])  # step 0.1
NOW = 1_700_000_000_000  # epoch ms UTC
TRENDING = ladder_policy("default", Regime.TRENDING)


def _next(**overrides):
    """A healthy account: equity 1000, 75 margin used, XRP at 2.5, 5×, base size 50 quote."""
    args = dict(
        policy=TRENDING, state=LadderState(0, NOW - 60_000), now_ms=NOW, pnl_pct=D(0),
        base_size_quote=D(50), price=D("2.5"), market=XRP, leverage=5, equity=D(1000),
        used_margin=D(75), free_margin=D(900), position_notional=D(375),
    )
    args.update(overrides)
    return next_addition(**args)


def _reason(result) -> str:
    return result.reason if isinstance(result, LadderDenied) else "OK"


# --- policies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("profile, multipliers, additions, interval, min_pnl", [
    ("default", ("1.0", "0.7", "0.5", "0.3", "0.2"), 5, 60, D(-2)),
    ("medium", ("1.0", "0.7", "0.5", "0.3", "0.2"), 5, 60, D(-2)),
    ("small", ("1.0", "0.6", "0.4"), 3, 60, D("-1.5")),
    ("large", ("1.0", "0.8", "0.6", "0.4", "0.3", "0.2", "0.15"), 7, 30, D(-3)),
])
def test_e10_policy_by_balance_profile_ranging(profile, multipliers, additions, interval, min_pnl):
    """SPEC E-10: per-profile ladders; ranging scales sizes ×0.9 and keeps count and thresholds."""
    policy = ladder_policy(profile, Regime.RANGING)
    assert policy.multipliers == tuple(D(m) * D("0.9") for m in multipliers)
    assert (policy.max_additions, policy.min_interval_s, policy.min_pnl_pct) == (additions, interval, min_pnl)


def test_e10_trending_scales_sizes_by_1_1():
    """SPEC E-10: trending ×1.1 → default first rungs 1.1, 0.77."""
    assert TRENDING.multipliers[:2] == (D("1.1"), D("0.77"))
    assert TRENDING.max_additions == 5


@pytest.mark.parametrize("profile, additions, min_pnl", [
    ("default", 3, D(-1)), ("small", 3, D(-1)), ("large", 3, D(-1)),
])
def test_e10_choppy_caps_three_additions_and_minus_1pct(profile, additions, min_pnl):
    """SPEC E-10: choppy ×0.7, at most 3 additions, PnL ≥ −1 % (stricter than every profile)."""
    policy = ladder_policy(profile, Regime.CHOPPY)
    assert (policy.max_additions, policy.min_pnl_pct) == (additions, min_pnl)
    assert len(policy.multipliers) == 3
    assert policy.multipliers[0] == D("0.7")


def test_e10_policy_accepts_a_plain_regime_string_and_rejects_typos():
    """SPEC E-10 / S-12: regime matched by value (works with trading.domain.regime's enum too); typos fail."""
    assert ladder_policy("large", "choppy") == ladder_policy("large", Regime.CHOPPY)
    with pytest.raises(ValueError):
        ladder_policy("lage", Regime.TRENDING)
    with pytest.raises(ValueError):
        ladder_policy("large", "sideways")


@pytest.mark.parametrize("profile", ["micro", "small", "medium", "large"])
@pytest.mark.parametrize("regime", list(Regime))
def test_r9_ladder_rungs_never_grow(profile, regime):
    """SPEC R-9 (no martingale): every rung is ≤ the one before, and the loss threshold is < 0."""
    policy = ladder_policy(profile, regime)
    assert all(b <= a for a, b in zip(policy.multipliers, policy.multipliers[1:]))
    assert D(-3) <= policy.min_pnl_pct < 0


def test_e10_policy_needs_a_multiplier_per_addition():
    """SPEC E-10: a policy allowing more additions than it has sizes is invalid."""
    with pytest.raises(ValueError):
        LadderPolicy((D(1),), 2, 60, D(-2))


# --- next_addition -----------------------------------------------------------------------------

def test_e10_first_addition_trending_xrp():
    """SPEC E-10: base 50 × 1.1 = 55 quote → 22 XRP (step 0.1), margin 11 at 5×."""
    assert _next() == Addition(contracts=D(22), notional=D(55), margin=D(11))


def test_e10_later_rung_uses_its_multiplier():
    """SPEC E-10: the 3rd addition is 0.5 × 1.1 × 50 = 27.5 quote = 11 XRP."""
    assert _next(state=LadderState(2, NOW - 60_000)).contracts == D(11)


def test_e10_contracts_floored_to_sol_step_1():
    """SPEC E-10 / O-1: 220 quote of SOL at 150 = 1.47 → 1 contract (150 quote, 30 margin)."""
    assert _next(market=SOL, price=D(150), base_size_quote=D(200)) == Addition(D(1), D(150), D(30))


def test_e10_f5_rung_below_btc_min_notional_is_denied():
    """SPEC E-10 / F-5: BTC's real MIN_NOTIONAL is 100: 150 × 0.9 → 0.001 BTC = 100 ok; rung 2
    (150 × 0.63 = 94.5 → 0.0009 → 0) is NOTIONAL_BELOW_MINIMUM."""
    ranging = ladder_policy("default", Regime.RANGING)
    btc = dict(policy=ranging, market=BTC, price=D(100000), base_size_quote=D(150))
    assert _next(**btc) == Addition(D("0.001"), D(100), D(20))
    assert _reason(_next(state=LadderState(1, NOW - 60_000), **btc)) == "NOTIONAL_BELOW_MINIMUM"


def test_e10_max_additions():
    """SPEC E-10: 5 additions done (default) → LADDER_MAX_ADDITIONS; the 5th is still allowed."""
    assert _reason(_next(state=LadderState(5, NOW - 60_000))) == "LADDER_MAX_ADDITIONS"
    assert _reason(_next(state=LadderState(4, NOW - 60_000))) == "OK"


def test_e10_min_interval_60s():
    """SPEC E-10: additions ≥ 60 s apart: 59.999 s → LADDER_TOO_SOON; 60 s → allowed."""
    assert _reason(_next(state=LadderState(1, NOW - 59_999))) == "LADDER_TOO_SOON"
    assert _reason(_next(state=LadderState(1, NOW - 60_000))) == "OK"


def test_e10_large_profile_interval_30s():
    """SPEC E-10: the large profile may add every 30 s."""
    large = ladder_policy("large", Regime.TRENDING)
    assert _reason(_next(policy=large, state=LadderState(1, NOW - 30_000))) == "OK"
    assert _reason(_next(policy=large, state=LadderState(1, NOW - 29_999))) == "LADDER_TOO_SOON"


def test_r9_e10_never_adds_to_a_loser_beyond_minus_2pct():
    """SPEC R-9 / E-10: PnL −2.01 % on margin → LADDER_PNL_TOO_LOW; −2 % still allowed."""
    assert _reason(_next(pnl_pct=D("-2.01"))) == "LADDER_PNL_TOO_LOW"
    assert _reason(_next(pnl_pct=D(-2))) == "OK"


def test_r9_e10_choppy_threshold_minus_1pct():
    """SPEC R-9 / E-10: choppy stops adding below −1 %."""
    choppy = ladder_policy("default", Regime.CHOPPY)
    assert _reason(_next(policy=choppy, pnl_pct=D("-1.01"))) == "LADDER_PNL_TOO_LOW"
    assert _reason(_next(policy=choppy, pnl_pct=D(-1))) == "OK"


def test_e10_keeps_20pct_of_free_margin_in_reserve():
    """SPEC E-10: margin 11 needs free margin ≥ 13.75 (80 % spendable) → 13.74 is LADDER_MARGIN_RESERVE."""
    assert _reason(_next(free_margin=D("13.74"))) == "LADDER_MARGIN_RESERVE"
    assert _reason(_next(free_margin=D("13.75"))) == "OK"
    assert _reason(_next(free_margin=D(0))) == "LADDER_MARGIN_RESERVE"


def test_z2_r8_total_margin_cap_50pct_of_equity():
    """SPEC Z-2 / R-8: used 489.01 + 11 > 500 (50 % of 1000) → LADDER_TOTAL_MARGIN; 489 fits."""
    assert _reason(_next(used_margin=D("489.01"))) == "LADDER_TOTAL_MARGIN"
    assert _reason(_next(used_margin=D(489))) == "OK"


def test_z2_position_notional_cap_20pct_of_equity_times_leverage():
    """SPEC Z-2: position 945.01 + 55 > 1000 (20 % × 1000 × 5) → LADDER_POSITION_CAP; 945 fits."""
    assert _reason(_next(position_notional=D("945.01"))) == "LADDER_POSITION_CAP"
    assert _reason(_next(position_notional=D(945))) == "OK"


def test_e10_fails_closed_without_price():
    """SPEC E-10 (STYLE: fail closed): no price → no addition."""
    assert _reason(_next(price=D(0))) == "MISSING_DATA"


def test_e10_checks_run_in_a_fixed_order_first_denial_wins():
    """SPEC E-10 / R-9 / Z-2: with every check failing, fixing them one at a time reveals the order."""
    broken = dict(
        state=LadderState(5, NOW - 1), pnl_pct=D(-50), free_margin=D(0), used_margin=D(999),
        position_notional=D(999_999), base_size_quote=D("0.01"),
    )
    fixes = [
        ("LADDER_MAX_ADDITIONS", dict(state=LadderState(0, NOW - 1))),
        ("LADDER_TOO_SOON", dict(state=LadderState(0, None))),
        ("LADDER_PNL_TOO_LOW", dict(pnl_pct=D(0))),
        ("LADDER_MARGIN_RESERVE", dict(free_margin=D(900))),
        ("LADDER_TOTAL_MARGIN", dict(used_margin=D(75))),
        ("LADDER_POSITION_CAP", dict(position_notional=D(375))),
        ("NOTIONAL_BELOW_MINIMUM", dict(base_size_quote=D(50))),
        ("OK", {}),
    ]
    for expected, fix in fixes:
        assert _reason(_next(**broken)) == expected
        broken.update(fix)


def test_e10_notional_minimum_is_checked_after_the_caps():
    """SPEC E-10 / F-5: a tiny rung on a healthy account → NOTIONAL_BELOW_MINIMUM."""
    assert _reason(_next(base_size_quote=D(4))) == "NOTIONAL_BELOW_MINIMUM"


@pytest.mark.parametrize("market", [BTC, SOL, XRP], ids=lambda m: m.symbol)
def test_r9_z2_every_allowed_addition_is_within_the_caps(market):
    """SPEC R-9 / Z-2 / R-8 / E-10: over 3000 random accounts, an Addition never breaks a cap, a
    threshold, the reserve, the step or the minimum notional."""
    rng = random.Random(7)
    prices = {BTC.symbol: 100_000, SOL.symbol: 150, XRP.symbol: 2.5}
    allowed = 0
    for _ in range(3000):
        policy = ladder_policy(rng.choice(["micro", "small", "medium", "large"]), rng.choice(list(Regime)))
        equity = D(rng.randint(100, 20_000))
        leverage = rng.choice([1, 3, 5, 8, 10])
        kw = dict(
            policy=policy, state=LadderState(rng.randint(0, 8), NOW - rng.randint(0, 120_000)),
            now_ms=NOW, pnl_pct=D(str(round(rng.uniform(-5, 5), 2))),
            base_size_quote=D(rng.randint(5, 400)), market=market, leverage=leverage, equity=equity,
            price=D(str(prices[market.symbol])) * D(str(round(rng.uniform(0.9, 1.1), 4))),
            used_margin=equity * D(str(round(rng.uniform(0, 0.6), 3))),
            free_margin=equity * D(str(round(rng.uniform(0, 1), 3))),
            position_notional=equity * leverage * D(str(round(rng.uniform(0, 0.25), 3))),
        )
        result = next_addition(**kw)
        if isinstance(result, LadderDenied):
            continue
        allowed += 1
        assert kw["state"].additions < policy.max_additions
        assert NOW - kw["state"].last_addition_ms >= policy.min_interval_s * 1000
        assert kw["pnl_pct"] >= policy.min_pnl_pct
        assert result.margin <= kw["free_margin"] * D("0.8")
        assert kw["used_margin"] + result.margin <= equity * D("0.5")
        assert kw["position_notional"] + result.notional <= equity * D("0.2") * leverage
        assert result.contracts % market.step_size == 0 and result.contracts >= market.min_qty
        assert result.notional >= min_notional(market)
        assert result.notional <= kw["base_size_quote"] * policy.multipliers[kw["state"].additions]
    assert allowed > 50  # the sweep must exercise the allow path, not only denials


def test_e10_r9_full_ladder_run_stops_at_the_limit_and_within_caps():
    """SPEC E-10 / R-9: adding every minute on a winner stops at 5 additions, sizes shrinking."""
    state, used, notional, sizes = LadderState(0, NOW), D(75), D(375), []
    for minute in range(1, 20):
        result = _next(state=state, now_ms=NOW + minute * 60_000, used_margin=used,
                       free_margin=D(1000) - used, position_notional=notional)
        if isinstance(result, LadderDenied):
            assert result.reason == "LADDER_MAX_ADDITIONS"
            break
        sizes.append(result.contracts)
        used, notional = used + result.margin, notional + result.notional
        state = state.after_addition(NOW + minute * 60_000)
    assert len(sizes) == 5 and state.additions == 5
    assert sizes == sorted(sizes, reverse=True)
    assert used <= D(500) and notional <= D(1000)


def test_e10_average_entry_after_addition():
    """SPEC E-10: brackets follow the averaged entry: 100 @ 2.5 + 50 @ 2.56 → 2.52."""
    assert average_entry(D(100), D("2.5"), D(50), D("2.56")) == D("2.52")
    assert average_entry(D(0), D("2.5"), D(0), D(3)) == D("2.5")
