"""E-7 fees first: a take-profit must clear the round-trip fees of what it closes — configs
whose targets cannot are refused at load naming the field, a stepwise step worth less than its
fees is not sent, a bracket leg that cannot clear its fees is folded into the last target — and
E-2 steps given in % of notional as well as in quote. E-5's partial-close floor on the brackets.
The fee is SPEC's: Binance USDⓈ-M's regular taker rate 0.05 % (the bundled markets' own)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

from tests.test_engine import SYMBOL, Harness
from trading.domain.config import AccountConfig, BotProfile, TradingConfig, load_trading_config
from trading.domain.errors import ConfigError
from trading.domain.exits import partial_close_floor
from trading.domain.models import ExitReason, OrderLeg, Side

TAKER_PCT = AccountConfig().taker_fee_pct  # % per side
FLOOR_PCT = 2 * (2 * TAKER_PCT)  # E-7: 2 × the round-trip taker fee


def test_e7_the_assumed_taker_fee_is_binance_regular_rate_and_the_bundled_markets_agree(markets):
    """0.05 % per side (SPEC E-7's example: a TP1 below 2 × the 0.1 % round trip = 0.2 %)."""
    assert TAKER_PCT == D("0.05") and FLOOR_PCT == D("0.2")
    assert markets[SYMBOL].taker_fee == D("0.0005")


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize("field, line, ok", [
    ("take_profit_1_pct", "take_profit_1_pct = 0.19\ntake_profit_2_pct = 0.5", False),
    ("take_profit_1_pct", "take_profit_1_pct = 0.2\ntake_profit_2_pct = 0.5", True),
    ("step_tp_pct", 'exit_mode = "stepwise"\nstep_tp_pct = [0.15, 0.3, 0.45, 0.6]', False),
    ("step_tp_pct", 'exit_mode = "stepwise"\nstep_tp_pct = [0.2, 0.3, 0.45, 0.6]', True),
    ("auto_profit_pct", "leverage = 20\nauto_profit_pct = 3", False),  # 3 % on margin at 20× = 0.15 % of notional
    ("auto_profit_pct", "leverage = 15\nauto_profit_pct = 3", True),  # 0.2 %
])
def test_e7_a_config_whose_targets_cannot_clear_the_fees_is_refused_at_load_naming_the_field(tmp_path, field, line,
                                                                                            ok):
    path = write(tmp_path, f"[[bots]]\n{line}\n")
    if ok:
        load_trading_config(path)
        return
    with pytest.raises(ConfigError) as error:
        load_trading_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: bots.0.{field}: ") and "E-7" in message and "\n" not in message


def test_e7_the_cli_refuses_such_a_config_with_one_line(tmp_path):
    """Bad input gets one clear line, never a traceback (GUIDE)."""
    path = write(tmp_path, "[[bots]]\ntake_profit_1_pct = 0.15\ntake_profit_2_pct = 0.4\n")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "backtest", "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "bots.0.take_profit_1_pct" in result.stderr
    assert "Traceback" not in result.stderr


def test_e7_the_shipped_examples_clear_the_fees():
    """OptiScalp C's 0.2 % TP1 sits exactly at the floor (the fees eat half of it)."""
    root = Path(__file__).resolve().parent.parent / "examples"
    for name in ("optiscalp.toml", "scaling.toml", "launch.toml"):
        load_trading_config(root / name)
    c = next(b for b in load_trading_config(root / "optiscalp.toml").bots if b.name == "C")
    assert c.take_profit_1_pct == FLOOR_PCT


def test_e2_spec_default_steps_in_quote_and_their_shares():
    """E-2: profit steps [0.10, 0.20, 0.30, 0.40] quote close [20, 20, 30, 30] %."""
    profile = BotProfile()
    assert profile.step_tp_quote == (D("0.10"), D("0.20"), D("0.30"), D("0.40"))
    assert profile.step_tp_shares_pct == (D(20), D(20), D(30), D(30))
    assert profile.step_tp_pct is None


async def stepwise_position(markets, **profile) -> Harness:
    h = Harness(markets, exit_mode="stepwise", timeout_minutes=0, auto_profit_pct=0, **profile)
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    assert h.position().contracts == D("468.7")  # Z-1: 1000 × 0.75 % / 0.8 % = 937.5 quote at 2.0
    return h


def closes(h: Harness) -> list:
    return [o for o in h.engine.open_orders.values() if o.leg is OrderLeg.CLOSE]


async def test_e7_a_stepwise_step_worth_less_than_its_fees_is_not_sent(markets):
    """E-2 step 1 (0.10 quote of PnL on a 937-quote position) would close 20 % = 93.7 XRP for
    0.02 quote of profit against ≈ 0.19 quote of round-trip taker fees: not sent (the step is
    counted, its share caught up by a later step). The last step, 9.37 quote of PnL, clears its
    fees and closes the rest."""
    h = await stepwise_position(markets)
    h.feed.last_close = 2.0003  # unrealised 468.7 × 0.0003 = 0.14 ≥ step 1 (0.10)
    await h.engine.manage_positions(h.feed)
    assert closes(h) == [] and h.position().steps_done == 1
    h.feed.last_close = 2.02  # unrealised 9.37 ≥ every step: the last closes everything
    await h.engine.manage_positions(h.feed)
    (close,) = closes(h)
    assert close.amount == D("468.7")
    await h.candle(2.02, 2.02, 2.02, 2.02)
    assert h.closed()[-1].exit_reason is ExitReason.STEP_TP and h.closed()[-1].net_pnl > 0


async def test_e2_steps_in_percent_of_notional(markets):
    """E-2 steps given in % of the position's notional at entry: 0.3 % of 937.4 = 2.81 quote.
    Just below it nothing closes; at it the first step closes its 20 % (93.7 XRP), which clears
    its fees."""
    h = await stepwise_position(markets, step_tp_pct=(D("0.3"), D("0.6"), D("0.9"), D("1.2")))
    notional = D("468.7") * D("2.0")
    h.feed.last_close = 2.00599  # 468.7 × 0.00599 = 2.807 < 0.3 % of notional (2.812)
    await h.engine.manage_positions(h.feed)
    assert closes(h) == [] and h.position().steps_done == 0
    h.feed.last_close = 2.006  # 2.8122 ≥ 2.8122
    assert D("468.7") * D("0.006") >= notional * D("0.3") / 100
    await h.engine.manage_positions(h.feed)
    (close,) = closes(h)
    assert close.amount == D("93.7") and h.position().steps_done == 1


async def test_e7_an_atr_take_profit_leg_that_cannot_clear_its_fees_is_folded_into_the_last(markets):
    """E-1 ATR mode with a tiny ATR (0.0015 at 2.0): TP1 at +1.0 ATR earns 0.0015 per XRP
    against 0.0020 of round-trip taker fees — folded into TP3; TP2 (+0.00225) clears and stays."""
    h = Harness(markets, tp_mode="atr")
    await h.start()
    market = markets[SYMBOL]
    _stop, take_profits, _prices = h.engine.protection.brackets(
        h.bot.profile, market, Side.LONG, D("2.0"), D("468.7"), "intent", D(70), D("0.0015"), h.clock.now_ms())
    legs = {o.leg: o.amount for o in take_profits}
    assert OrderLeg.TP1 not in legs
    assert legs[OrderLeg.TP2] == D("140.6")  # 30 % of 468.7 floored to the step
    assert legs[OrderLeg.TP2] + legs[OrderLeg.TP3] == D("468.7")


def test_e5_spec_partial_close_floors():
    """E-5: 5 quote, 3 for micro/small accounts, 10 for large."""
    assert [partial_close_floor(p) for p in ("micro", "small", "medium", "large")] == [D(3), D(3), D(5), D(10)]


@pytest.mark.parametrize("share, tp1", [(D("0.3"), None), (D("1"), D("4.6"))])
async def test_e5_a_tp1_leg_below_the_partial_close_floor_is_folded_into_tp2(markets, share, tp1):
    """E-5 on the brackets: a 1000 account is `small` (floor 3 quote). A 0.3 % TP1 share of the
    468.7-XRP position is 1.4 XRP = 2.80 quote < 3: no TP1 order, TP2 takes everything. A 1 %
    share is 4.6 XRP = 9.20 quote: placed."""
    assert partial_close_floor("small") == 3
    h = Harness(markets, tp1_share_pct=share)
    await h.start()
    assert h.engine.balance_profile_name() == "small"
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    legs = {o.leg: o.amount for o in h.brackets()}
    assert legs.get(OrderLeg.TP1) == tp1
    assert legs[OrderLeg.TP2] == D("468.7") - (tp1 or 0)
    assert legs[OrderLeg.STOP_LOSS] == D("468.7")


def test_e7_a_venue_fee_above_the_assumed_one_is_checked_at_start(markets):
    """E-7 at start: the markets' own taker fee is checked too (a venue charging 0.06 % makes a
    0.2 % TP1 fall short of 2 × its 0.12 % round trip)."""
    from dataclasses import replace

    from trading.adapters.order_gateway import OrderGateway
    from trading.adapters.simulated import SimulatedExchange
    from trading.domain.errors import OptiFlowError
    from trading.domain.events import EventBuffer
    from trading.engine.core import Engine
    from trading.ports import ReplayClock

    dear = {SYMBOL: replace(markets[SYMBOL], taker_fee=D("0.0006"))}
    config = TradingConfig(bots=(BotProfile(symbols=(SYMBOL,), take_profit_1_pct=D("0.2")),))
    clock = ReplayClock(0)
    with pytest.raises(OptiFlowError, match=r"bots\.0\.take_profit_1_pct: .* on XRP/USDT:USDT"):
        Engine(config=config, markets=dear, exchange=OrderGateway(SimulatedExchange(dear, D(1000), D(0), clock)),
               clock=clock, sink=EventBuffer())
