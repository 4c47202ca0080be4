"""SPEC T-5 KPIs (RODC, RPT, CUR, average R:R, daily return, max drawdown) against the §11 targets
(✅ / ⚠️ / ❌) with the previous equity tier's figures, in the daily report and in `optiflow
backtest`; SPEC M-1 "strategy underperforming" once ≥ 30 trades sit below the §11 minimum."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path

from tests import stack
from tests.test_monitor import QUIET
from tests.test_risk_chat import DAY0, HOUR
from trading.domain.config import load_trading_config
from trading.domain.kpi import (
    AVG_RR,
    BAD,
    CUR_RANGE,
    CUR_TOO_TIGHT,
    DAILY_RETURN,
    HOLD_MINUTES,
    MAX_DRAWDOWN,
    MIN_TRADES_FOR_KPIS,
    OK,
    PROFIT_FACTOR,
    TIER_STEP_PROFIT_FACTOR,
    TIER_STEP_WIN_RATE,
    WARN,
    WIN_RATE,
    compute_kpis,
    kpi_report,
    tier_targets,
)
from trading.domain.models import Fill, OrderLeg, OrderSide, Position, Side
from trading.domain.monitor import detect
from trading.domain.playbooks import PLAYBOOKS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_s11_spec_targets():
    """§11 (seed 003 §5.1): minimum / goal / excellent; seed 000's tier steps, hold and CUR."""
    assert (WIN_RATE.minimum, WIN_RATE.goal, WIN_RATE.excellent) == (55, 60, 65)
    assert (PROFIT_FACTOR.minimum, PROFIT_FACTOR.goal, PROFIT_FACTOR.excellent) == (D("1.2"), D("1.4"), D("1.6"))
    assert (DAILY_RETURN.minimum, DAILY_RETURN.goal, DAILY_RETURN.excellent) == (D("0.5"), 1, D("1.5"))
    assert (MAX_DRAWDOWN.minimum, MAX_DRAWDOWN.goal, MAX_DRAWDOWN.excellent) == (15, 10, 7)
    assert (AVG_RR.minimum, AVG_RR.goal, AVG_RR.excellent) == (1, D("1.5"), 2)
    assert (TIER_STEP_WIN_RATE, TIER_STEP_PROFIT_FACTOR) == (2, D("0.2"))
    assert HOLD_MINUTES == (18, 22) and CUR_RANGE == (55, 70) and CUR_TOO_TIGHT == 40
    assert MIN_TRADES_FOR_KPIS == 30
    third = tier_targets(2)  # 750–1500: two tiers above the first
    assert (third["win_rate"].minimum, third["profit_factor"].minimum) == (59, D("1.6"))


def test_s11_marks_at_the_thresholds():
    assert [WIN_RATE.mark(D(v)) for v in ("54.99", "55", "59.99", "60", "65")] == [BAD, WARN, WARN, OK, OK]
    assert [MAX_DRAWDOWN.mark(D(v)) for v in ("6.9", "9.99", "10", "14.99", "15")] == [OK, OK, WARN, WARN, BAD]
    assert [AVG_RR.mark(D(v)) for v in ("0.99", "1", "1.5")] == [BAD, WARN, OK]


def position(pid: str, entry: str, contracts: int, opened_h: float, closed_h: float, net: str) -> Position:
    return Position(pid, "A", "XRP/USDT:USDT", Side.LONG, D(0), D(contracts), D(entry), int(opened_h * HOUR),
                    D(0), D(0), D(0), 5, realised_pnl=D(net), closed_ms=int(closed_h * HOUR), exit_price=D(entry))


def fill(cid: str, leg: OrderLeg, contracts: int, at_h: float, price: str = "2") -> Fill:
    side = OrderSide.BUY if leg is OrderLeg.ENTRY else OrderSide.SELL
    return Fill(cid, "A", "XRP/USDT:USDT", side, leg, D(contracts), D(price), D(0), int(at_h * HOUR))


def test_t5_rodc_rpt_cur_from_time_weighted_margin():
    """A day with two trades at 5×: A holds 100 XRP at 2.0 (margin 40) for 3 h, then 50 for 3 h
    after TP1 (margin 20): 180 quote·h; B holds 200 at 1.0 (margin 40) for 12 h, later: 480. The
    day's average margin is 660 / 24 = 27.5 quote; net +2 − 1 = +1: RODC = 1 / 27.5 = 3.64 %,
    RPT = 0.50, CUR = 27.5 / 1000 = 2.75 %, R:R = 2 / 1 = 1:2, daily return +0.1 %."""
    a = position("a", "2", 100, 1, 7, "2")
    b = position("b", "1", 200, 10, 22, "-1")
    fills = [fill("a1", OrderLeg.ENTRY, 100, 1), fill("a2", OrderLeg.TP1, 50, 4), fill("a3", OrderLeg.TP2, 50, 7)]
    kpis = compute_kpis(trades=[a, b], fills=fills, equities=[D(1000)], start_ms=0, end_ms=24 * HOUR,
                        start_equity=D(1000), max_drawdown_pct=D("0.3"))
    assert kpis.rodc_pct.quantize(D("0.01")) == D("3.64")
    assert kpis.rpt == D("0.5") and kpis.cur_pct == D("2.75") and kpis.avg_rr == 2
    assert kpis.daily_return_pct == D("0.1") and kpis.win_rate == 50
    report = kpi_report(kpis, "300-750", 1, previous=replace(kpis, win_rate=D(40)), previous_tier="120-300")
    by_key = {line.key: line for line in report.lines}
    assert by_key["win_rate"].mark == BAD and by_key["win_rate"].previous == 40  # 50 < 57 (tier 2's minimum)
    assert by_key["avg_rr"].mark == OK and by_key["cur"].mark == BAD and by_key["rodc"].mark == ""
    assert report.previous_tier == "120-300"


async def test_t5_daily_report_shows_kpis_against_targets(tmp_path, data_dir):
    """/daily on the real stack: the KPI block with its marks and targets, the numbers the
    service computed from the day's trades."""
    runtime = await stack.replayed(tmp_path / "d.db", data_dir, DAY0 + 40 * HOUR)
    try:
        report = await runtime.service.daily_report()
        [text] = await stack.ask(runtime, tmp_path, "/daily")
    finally:
        await runtime.close()
    assert report.trades and report.kpis is not None
    assert "KPIs vs §11 targets (min / goal / excellent, tier 750-1500):" in text
    lines = {line.key: line for line in report.kpis.lines}
    assert f"{lines['win_rate'].mark} Win rate: {lines['win_rate'].value:.2f} % (59 % / 64 % / 69 %)" in text
    assert "Max drawdown: " in text and "(< 15 % / < 10 % / < 7 %)" in text
    for label in ("RODC (return on deployed capital)", "RPT (return per trade)", "CUR (capital utilisation)",
                  "Average R:R", "Daily return"):
        assert label in text


async def test_t5_previous_tier_figures_beside_the_current_ones(tmp_path, data_dir):
    """The `scaling` example started at 760 (tier 750–1500) falls below 735 into 300–750: the
    report's KPIs stand beside the 750–1500 tier's figures, computed over the time in that tier."""
    config = load_trading_config(EXAMPLES / "scaling.toml")
    config = config.model_copy(update={"account": config.account.model_copy(update={"starting_balance": D(760)})})
    runtime = await stack.replayed(tmp_path / "t.db", data_dir, DAY0 + 21 * 24 * HOUR, config)
    try:
        history = runtime.engine.risk.account.tier_history
        report = await runtime.service.period_report("run", DAY0, runtime.clock.now_ms() + 1)
        (since, first), (until, second) = history[-2], history[-1]
        before = await runtime.store.positions.list_closed(since_ms=since, until_ms=until)
    finally:
        await runtime.close()
    assert (first, second) == ("750-1500", "300-750")
    assert report.kpis.previous_tier == "750-1500" and report.kpis.tier == "300-750"
    wins = sum(1 for t in before if t.net_pnl > 0)
    (win_rate,) = [line for line in report.kpis.lines if line.key == "win_rate"]
    assert win_rate.previous == D(wins) * 100 / len(before)


def test_t5_backtest_prints_the_kpis(tmp_path):
    """`optiflow backtest` ends its table with the KPI block (marks and targets)."""
    result = subprocess.run([sys.executable, "-m", "bot.cli", "backtest", "--symbols", "XRP", "--from", "2025-06-03",
                             "--to", "2025-06-05", "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "KPIs vs §11 targets (min / goal / excellent, tier 750-1500):" in out
    for label in ("Win rate:", "Profit factor:", "Average R:R:", "Daily return:", "Max drawdown:", "RODC", "RPT", "CUR"):
        assert label in out.split("KPIs vs")[1], label


def test_m1_strategy_underperforming_after_30_trades_below_the_minimum():
    """M-1: 30 trades at a 40 % win rate raise STRATEGY_UNDERPERFORMING with its playbook (pause
    all, the launch preset, an optimization); 29 do not; the tier raises the bar."""
    losing = tuple([D(1)] * 12 + [D(-1)] * 18)  # 40 %, profit factor 0.67, R:R 1:1
    assert [i.kind for i in detect(replace(QUIET, recent_nets=losing[:29]))] == []
    (incident,) = detect(replace(QUIET, recent_nets=losing))
    assert incident.kind == "STRATEGY_UNDERPERFORMING" and incident.playbook == "underperforming"
    assert "win rate 40.0 % < 55 %" in incident.text and "profit factor 0.67 < 1.2" in incident.text
    steps = PLAYBOOKS["underperforming"].steps
    assert steps[0].action == "PAUSE_ALL" and "launch" in steps[1].text and "/optimize" in steps[2].text
    fine = tuple([D(1)] * 17 + [D(-1)] * 13)  # 56.7 %, PF 1.31, R:R 1:1
    assert detect(replace(QUIET, recent_nets=fine)) == []
    assert [i.kind for i in detect(replace(QUIET, recent_nets=fine, tier_index=1))] == ["STRATEGY_UNDERPERFORMING"]


async def test_m1_underperforming_alerts_once_on_the_real_stack(tmp_path, data_dir):
    """The bundled data's default config loses (issue 14): after its first 30 trades the monitor
    raises the incident once, with the playbook button's key."""
    runtime = await stack.replayed(tmp_path / "m.db", data_dir, DAY0 + 21 * 24 * HOUR)
    try:
        assert len(runtime.engine.risk.recent_nets) >= 30
        first = await runtime.service.run_monitor()
        again = await runtime.service.run_monitor()
    finally:
        await runtime.close()
    assert [a.kind for a in first if a.kind == "STRATEGY_UNDERPERFORMING"] == ["STRATEGY_UNDERPERFORMING"]
    assert [a.playbook for a in first if a.kind == "STRATEGY_UNDERPERFORMING"] == ["underperforming"]
    assert again == []


def test_t5_a_day_without_a_losing_trade_is_not_marked_as_a_failed_profit_factor():
    """Only wins: the profit factor is unbounded (✅, "n/a (no losing trade)"), R:R cannot be
    computed (no mark); no trade at all: no profit-factor mark either."""
    from bot.kpi_text import kpi_line

    wins = compute_kpis(trades=[position("w", "2", 10, 1, 2, "3")], fills=[], equities=[D(1000)], start_ms=0,
                        end_ms=24 * HOUR, start_equity=D(1000), max_drawdown_pct=D(0))
    lines = {line.key: line for line in kpi_report(wins, "750-1500", 2).lines}
    assert (lines["profit_factor"].mark, lines["avg_rr"].mark) == (OK, "")
    assert kpi_line(lines["profit_factor"], "USDT").startswith("✅ Profit factor: n/a (no losing trade)")
    empty = compute_kpis(trades=[], fills=[], equities=[], start_ms=0, end_ms=24 * HOUR, start_equity=D(1000),
                         max_drawdown_pct=D(0))
    assert {line.key: line for line in kpi_report(empty, "750-1500", 2).lines}["profit_factor"].mark == ""
