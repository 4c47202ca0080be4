"""Key performance indicators and their targets (SPEC T-5, §11, M-1).

§11 targets (minimum / goal / excellent; seed 003 §5.1): win rate 55 / 60 / 65 %, profit factor
1.2 / 1.4 / 1.6, daily return 0.5 / 1 / 1.5 %, max drawdown < 15 / < 10 / < 7 %, average R:R 1:1 /
1:1.5 / 1:2. Seed 000: the expectations rise by 2 % win rate and 0.2 profit factor per equity tier
(the first tier, 120–300, is the base); average hold 18–22 min; CUR 55–70 % (below 40 % = the
filters are too tight).

T-5 formulas over a period [start, end):
- RODC (return on deployed capital) = net PnL / time-weighted average margin in positions, in %;
- RPT (return per trade) = net PnL / trades, in quote;
- CUR (capital utilisation) = time-weighted average margin in positions / average equity, in %;
- average R:R = average winning trade / |average losing trade| (net PnL), shown as 1:x;
- daily return = net PnL in % of the start equity / the period's length in days (at least 1);
- max drawdown = the largest fall from a running peak of equity, in % of that peak.

The margin of a position at a moment is its contracts then × contractSize × entry price /
leverage; the contracts follow its fills (entry, additions, partial exits). Only trades closed in
the period count (a position still open is not in a report yet).

Marks: ✅ the goal is met, ⚠️ the minimum is met, ❌ below the minimum (max drawdown: under the
goal / under the minimum / not); CUR ✅ inside 55–70 %, ❌ under 40 %, ⚠️ otherwise; hold time ✅
inside 18–22 min, ⚠️ otherwise. RODC and RPT have no §11 target: shown without a mark; nor is
a KPI that cannot be computed (R:R without a win or a loss; a profit factor without any trade —
without a losing trade it is unbounded: ✅).
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from trading.domain.models import ZERO, Fill, OrderLeg, Position

HUNDRED = Decimal(100)
DAY_MS = 86_400_000
OK, WARN, BAD = "✅", "⚠️", "❌"


@dataclass(frozen=True, slots=True)
class Target:
    """A §11 target: minimum, goal, excellent; ``lower_is_better`` for drawdowns."""

    minimum: Decimal
    goal: Decimal
    excellent: Decimal
    lower_is_better: bool = False

    def mark(self, value: Decimal | None) -> str:
        """✅ goal met, ⚠️ minimum met, ❌ below the minimum (no value: ❌)."""
        if value is None:
            return BAD
        if self.lower_is_better:
            return OK if value < self.goal else WARN if value < self.minimum else BAD
        return OK if value >= self.goal else WARN if value >= self.minimum else BAD

    def below_minimum(self, value: Decimal | None) -> bool:
        """True when ``value`` misses the minimum."""
        return self.mark(value) == BAD


# SPEC §11 (seed 003 §5.1) for the first equity tier.
WIN_RATE = Target(Decimal(55), Decimal(60), Decimal(65))
PROFIT_FACTOR = Target(Decimal("1.2"), Decimal("1.4"), Decimal("1.6"))
DAILY_RETURN = Target(Decimal("0.5"), Decimal(1), Decimal("1.5"))
MAX_DRAWDOWN = Target(Decimal(15), Decimal(10), Decimal(7), lower_is_better=True)
AVG_RR = Target(Decimal(1), Decimal("1.5"), Decimal(2))
# Seed 000.
TIER_STEP_WIN_RATE = Decimal(2)
TIER_STEP_PROFIT_FACTOR = Decimal("0.2")
HOLD_MINUTES = (Decimal(18), Decimal(22))
CUR_RANGE = (Decimal(55), Decimal(70))
CUR_TOO_TIGHT = Decimal(40)
# SPEC M-1: the KPIs are judged once this many trades closed.
MIN_TRADES_FOR_KPIS = 30


def tier_targets(tier_index: int) -> dict[str, Target]:
    """The trade KPIs' targets for the equity tier number ``tier_index`` (0 = 120–300): win rate
    + 2 % and profit factor + 0.2 per tier above the first (seed 000)."""
    step = Decimal(max(tier_index, 0))
    return {
        "win_rate": Target(*(v + TIER_STEP_WIN_RATE * step for v in (WIN_RATE.minimum, WIN_RATE.goal,
                                                                        WIN_RATE.excellent))),
        "profit_factor": Target(*(v + TIER_STEP_PROFIT_FACTOR * step for v in (
            PROFIT_FACTOR.minimum, PROFIT_FACTOR.goal, PROFIT_FACTOR.excellent))),
        "daily_return": DAILY_RETURN,
        "max_drawdown": MAX_DRAWDOWN,
        "avg_rr": AVG_RR,
    }


@dataclass(frozen=True, slots=True)
class Kpis:
    """The KPIs of a period (see the module doc): percentages in %, rpt in quote, hold in
    minutes; None where there is nothing to divide by."""

    trades: int
    win_rate: Decimal
    profit_factor: Decimal | None
    avg_rr: Decimal | None
    daily_return_pct: Decimal
    max_drawdown_pct: Decimal
    rodc_pct: Decimal | None
    rpt: Decimal | None
    cur_pct: Decimal | None
    avg_hold_minutes: Decimal | None
    days: Decimal


def trade_stats(nets: Sequence[Decimal]) -> tuple[Decimal, Decimal | None, Decimal | None]:
    """(win rate %, profit factor, average R:R) of the net PnLs (quote): profit factor None
    without a losing trade; R:R None without a win or a loss."""
    wins = [n for n in nets if n > 0]
    losses = [n for n in nets if n < 0]
    win_rate = Decimal(len(wins)) * HUNDRED / len(nets) if nets else ZERO
    gross_loss = -sum(losses, ZERO)
    pf = sum(wins, ZERO) / gross_loss if gross_loss > 0 else None
    rr = (sum(wins, ZERO) / len(wins)) / (gross_loss / len(losses)) if wins and losses else None
    return win_rate, pf, rr


def margin_time(trade: Position, fills: Sequence[Fill], start_ms: int, end_ms: int,
                contract_size: Decimal = Decimal(1)) -> Decimal:
    """∫ margin dt of ``trade`` inside [start_ms, end_ms), in quote × ms: its contracts follow
    its fills (entry and additions add, exits reduce); without fills its initial contracts are
    held from open to close."""
    opened, closed = trade.opened_ms, trade.closed_ms if trade.closed_ms is not None else end_ms
    per_contract = contract_size * trade.entry_price / trade.leverage
    mine = sorted((f for f in fills if f.bot == trade.bot and f.symbol == trade.symbol
                   and opened <= f.timestamp <= closed), key=lambda f: f.timestamp)
    if not mine:
        steps = [(opened, trade.initial_contracts), (closed, -trade.initial_contracts)]
    else:
        steps = [(f.timestamp, f.amount if f.leg in (OrderLeg.ENTRY, OrderLeg.ADD) else -f.amount) for f in mine]
    total = ZERO
    contracts = ZERO
    last = opened
    for ts, delta in steps:
        lo, hi = max(last, start_ms), min(ts, end_ms)
        if hi > lo and contracts > 0:
            total += contracts * per_contract * (hi - lo)
        contracts = max(ZERO, contracts + delta)
        last = ts
    return total


def compute_kpis(*, trades: Sequence[Position], fills: Sequence[Fill], equities: Sequence[Decimal], start_ms: int,
                 end_ms: int, start_equity: Decimal, max_drawdown_pct: Decimal,
                 contract_sizes: Mapping[str, Decimal] | None = None) -> Kpis:
    """The KPIs of the trades closed in [start_ms, end_ms) (see the module doc). ``equities``:
    the equity samples of the period (quote; their mean is the CUR denominator, the start
    equity when empty); ``max_drawdown_pct`` computed by the report."""
    nets = [t.net_pnl for t in trades]
    win_rate, pf, rr = trade_stats(nets)
    net = sum(nets, ZERO)
    period = max(end_ms - start_ms, 1)
    days = Decimal(period) / DAY_MS
    sizes = contract_sizes or {}
    deployed = sum((margin_time(t, fills, start_ms, end_ms, sizes.get(t.symbol, Decimal(1))) for t in trades), ZERO)
    avg_margin = deployed / period
    avg_equity = sum(equities, ZERO) / len(equities) if equities else start_equity
    holds = [Decimal(t.closed_ms - t.opened_ms) / 60_000 for t in trades if t.closed_ms is not None]
    return Kpis(
        trades=len(trades),
        win_rate=win_rate,
        profit_factor=pf,
        avg_rr=rr,
        # A period shorter than a day (today so far) shows its own return, not an extrapolation.
        daily_return_pct=(net / start_equity * HUNDRED / max(days, Decimal(1))) if start_equity > 0 else ZERO,
        max_drawdown_pct=max_drawdown_pct,
        rodc_pct=net / avg_margin * HUNDRED if avg_margin > 0 else None,
        rpt=net / len(trades) if trades else None,
        cur_pct=avg_margin / avg_equity * HUNDRED if avg_equity > 0 and trades else None,
        avg_hold_minutes=sum(holds, ZERO) / len(holds) if holds else None,
        days=days,
    )


@dataclass(frozen=True, slots=True)
class KpiLine:
    """One KPI as a report shows it: ``key``, the ``value`` (None = n/a), its mark (✅/⚠️/❌, ""
    without a §11 target), the target in words, and the previous tier's value (None = none)."""

    key: str
    value: Decimal | None
    mark: str
    target: str
    previous: Decimal | None = None


@dataclass(frozen=True, slots=True)
class KpiReport:
    """The KPI block of a report (SPEC T-5): the lines against the targets of ``tier``, and the
    previous tier's name ("" when the account never changed tier)."""

    tier: str
    lines: tuple[KpiLine, ...]
    previous_tier: str = ""


def _range_mark(value: Decimal | None, low: Decimal, high: Decimal, floor: Decimal | None = None) -> str:
    if value is None:
        return WARN
    if low <= value <= high:
        return OK
    return BAD if floor is not None and value < floor else WARN


def _pf_mark(kpis: Kpis, target: Target) -> str:
    """The profit factor's mark: without a losing trade it is unbounded (✅ when something was
    won, no mark without trades)."""
    if kpis.profit_factor is None:
        return OK if kpis.trades and kpis.win_rate > 0 else ""
    return target.mark(kpis.profit_factor)


def kpi_report(kpis: Kpis, tier: str, tier_index: int, previous: Kpis | None = None,
               previous_tier: str = "") -> KpiReport:
    """The report lines of ``kpis`` against the targets of the tier ``tier_index`` (0-based),
    beside the previous tier's figures when given."""
    targets = tier_targets(tier_index)

    def words(t: Target, unit: str = "") -> str:
        if t.lower_is_better:
            return f"< {t.minimum}{unit} / < {t.goal}{unit} / < {t.excellent}{unit}"
        return f"{t.minimum}{unit} / {t.goal}{unit} / {t.excellent}{unit}"

    def prev(name: str) -> Decimal | None:
        return None if previous is None else getattr(previous, name)

    lines = (
        KpiLine("win_rate", kpis.win_rate, targets["win_rate"].mark(kpis.win_rate), words(targets["win_rate"], " %"),
                prev("win_rate")),
        KpiLine("profit_factor", kpis.profit_factor, _pf_mark(kpis, targets["profit_factor"]),
                words(targets["profit_factor"]), prev("profit_factor")),
        KpiLine("avg_rr", kpis.avg_rr, "" if kpis.avg_rr is None else targets["avg_rr"].mark(kpis.avg_rr),
                words(targets["avg_rr"]), prev("avg_rr")),
        KpiLine("daily_return", kpis.daily_return_pct, targets["daily_return"].mark(kpis.daily_return_pct),
                words(targets["daily_return"], " %"), prev("daily_return_pct")),
        KpiLine("max_drawdown", kpis.max_drawdown_pct, targets["max_drawdown"].mark(kpis.max_drawdown_pct),
                words(targets["max_drawdown"], " %"), prev("max_drawdown_pct")),
        KpiLine("rodc", kpis.rodc_pct, "", "no §11 target", prev("rodc_pct")),
        KpiLine("rpt", kpis.rpt, "", "no §11 target", prev("rpt")),
        KpiLine("cur", kpis.cur_pct, _range_mark(kpis.cur_pct, *CUR_RANGE, CUR_TOO_TIGHT),
                f"{CUR_RANGE[0]}–{CUR_RANGE[1]} %; < {CUR_TOO_TIGHT} % = filters too tight", prev("cur_pct")),
        KpiLine("avg_hold", kpis.avg_hold_minutes, _range_mark(kpis.avg_hold_minutes, *HOLD_MINUTES),
                f"{HOLD_MINUTES[0]}–{HOLD_MINUTES[1]} min", prev("avg_hold_minutes")),
    )
    return KpiReport(tier, lines, previous_tier if previous is not None else "")


def underperforming(nets: Sequence[Decimal], tier_index: int, min_trades: int = MIN_TRADES_FOR_KPIS) -> list[str]:
    """SPEC M-1: the trade KPIs (win rate, profit factor, average R:R) of ``nets`` (net PnL per
    trade, quote) below their §11 minimum for the tier, in words — once ≥ ``min_trades``
    trades closed (none before)."""
    if len(nets) < min_trades:
        return []
    targets = tier_targets(tier_index)
    win_rate, pf, rr = trade_stats(nets)
    out = []
    if targets["win_rate"].below_minimum(win_rate):
        out.append(f"win rate {win_rate:.1f} % < {targets['win_rate'].minimum} %")
    if pf is not None and targets["profit_factor"].below_minimum(pf):
        out.append(f"profit factor {pf:.2f} < {targets['profit_factor'].minimum}")
    if rr is not None and targets["avg_rr"].below_minimum(rr):
        out.append(f"average R:R 1:{rr:.2f} < 1:{targets['avg_rr'].minimum}")
    return out
