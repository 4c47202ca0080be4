"""Sizing (SPEC Z-1, Z-2, Z-4) and exchange precision (O-1, F-5) on real Binance market rules."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from trading.domain.errors import PrecisionError
from trading.domain.precision import check_order_size, floor_amount, floor_price, min_notional
from trading.domain.sizing import SizingRejected, equity_tier, size_position


def _size(market, **overrides):
    args = dict(
        market=market, equity=D(400), price=D("2.5"), stop_loss_pct=D("0.8"), risk_pct=D("0.75"),
        leverage=5, used_margin=D(0), max_total_margin_pct=D(50), max_position_size_pct=D(20),
    )
    args.update(overrides)
    return size_position(**args)


def test_z1_worked_example_equity_400_risk_075_sl_08(markets):
    """SPEC Z-1: equity 400, risk 0.75 % = 3, SL 0.8 % → notional 375, margin 75 at 5×."""
    size = _size(markets["XRP/USDT:USDT"])
    assert size.contracts == D(150)  # 375 / 2.5, a multiple of XRP's 0.1 step
    assert size.notional == D(375)
    assert size.margin == D(75)
    assert size.risk == D(3)
    assert size.capped_by == ""


def test_z1_contracts_floored_to_step_size_o1(markets):
    """SPEC O-1: BTC step 0.001 → 375 / 100000 = 0.00375 is floored to 0.003 contracts."""
    size = _size(markets["BTC/USDT:USDT"], price=D(100000))
    assert size.contracts == D("0.003")
    assert size.notional == D(300)
    assert size.margin == D(60)


def test_z2_notional_capped_by_max_position_size(markets):
    """SPEC Z-2: notional ≤ 20 % of equity × leverage, however tight the stop."""
    size = _size(markets["XRP/USDT:USDT"], stop_loss_pct=D("0.1"))
    assert size.notional == D(400)  # 400 × 20 % × 5
    assert size.capped_by == "MAX_POSITION_SIZE"


def test_z2_r8_total_margin_cap_leaves_no_room(markets):
    """SPEC R-8 / Z-2: used + new margin ≤ 50 % of equity; a full account is refused."""
    with pytest.raises(SizingRejected) as error:
        _size(markets["XRP/USDT:USDT"], used_margin=D(200))
    assert error.value.reason == "MARGIN_LIMIT"


def test_z2_total_margin_cap_shrinks_the_position(markets):
    """SPEC Z-2: with 180 of 200 margin used, the new position gets at most 20 margin."""
    size = _size(markets["XRP/USDT:USDT"], used_margin=D(180))
    assert size.margin <= D(20)
    assert size.capped_by == "TOTAL_MARGIN"


def test_f5_size_below_exchange_min_notional_is_rejected(markets):
    """SPEC F-5: BTC's real MIN_NOTIONAL is 100; a 50-quote account cannot trade it."""
    with pytest.raises(SizingRejected) as error:
        _size(markets["BTC/USDT:USDT"], equity=D(50), price=D(100000))
    assert error.value.reason == "NOTIONAL_BELOW_MINIMUM"


def test_sizing_fails_closed_without_price(markets):
    """No price or equity → no size (fail closed)."""
    with pytest.raises(SizingRejected) as error:
        _size(markets["XRP/USDT:USDT"], price=D(0))
    assert error.value.reason == "MISSING_DATA"


def test_o1_precision_uses_real_tick_and_step(markets):
    """SPEC O-1: prices floor to the tick (BTC 0.1, XRP 0.0001), quantities to the step."""
    btc, xrp = markets["BTC/USDT:USDT"], markets["XRP/USDT:USDT"]
    assert floor_price(btc, D("104321.27")) == D("104321.2")
    assert floor_price(xrp, D("2.123456")) == D("2.1234")
    assert floor_amount(btc, D("0.0129")) == D("0.012")
    assert floor_amount(xrp, D("15.99")) == D("15.9")


def test_o1_violation_is_a_typed_error_naming_symbol_value_and_limit(markets):
    """SPEC O-1: a violation names symbol, value and limit."""
    with pytest.raises(PrecisionError) as error:
        check_order_size(markets["BTC/USDT:USDT"], D("0.001"), D(50000))
    assert error.value.symbol == "BTC/USDT:USDT"
    assert error.value.what == "notional"
    assert error.value.limit == D(100)
    assert "BTC/USDT:USDT" in str(error.value)


def test_f5_min_notional_never_below_five(markets):
    """SPEC F-5: the floor is max(exchange MIN_NOTIONAL, 5)."""
    assert min_notional(markets["XRP/USDT:USDT"]) == D(5)
    assert min_notional(markets["BTC/USDT:USDT"]) == D(100)


@pytest.mark.parametrize(
    "equity, score, share",
    [(D(200), 3.0, D(80)), (D(400), 3.3, D(75)), (D(1000), 3.6, D(70)), (D(5000), 3.6, D(70))],
)
def test_z4_equity_tier_sets_min_score_and_tp1_share(equity, score, share):
    """SPEC Z-4: the tier of the equity sets the minimum score and the TP1 share."""
    tier = equity_tier(equity)
    assert tier.min_score == score
    assert tier.tp1_share_pct == share
