"""Performance reports over a period (SPEC T-5), from closed trades and the equity curve.

Formulas: win rate = winning trades / trades × 100; profit factor = Σ profits / |Σ losses|
(None when there is no losing trade); net PnL = Σ (realised − fees + funding); max drawdown =
largest fall from a running peak of equity, in % of that peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from trading.domain.models import ZERO, EquitySnapshot, ExitReason, Position
from trading.domain.views import PeriodReport, SymbolResult

HUNDRED = Decimal(100)


def max_drawdown_pct(equities: Sequence[Decimal]) -> Decimal:
    """Largest peak-to-trough fall of ``equities`` (quote, oldest first) in % of the peak."""
    peak = None
    worst = ZERO
    for equity in equities:
        if peak is None or equity > peak:
            peak = equity
        elif peak > 0:
            worst = max(worst, (peak - equity) / peak * HUNDRED)
    return worst


def build_report(
    *,
    title: str,
    start_ms: int,
    end_ms: int,
    trades: Sequence[Position],
    equity_curve: Sequence[EquitySnapshot],
    start_equity: Decimal,
    end_equity: Decimal,
    price_proxies: tuple[tuple[str, str], ...] = (),
) -> PeriodReport:
    """Aggregate closed ``trades`` (closed in [start_ms, end_ms)) and the equity samples of the
    period into a :class:`PeriodReport`. Equities in quote; times epoch ms UTC."""
    nets = [t.net_pnl for t in trades]
    wins = sum(1 for n in nets if n > 0)
    losses = sum(1 for n in nets if n < 0)
    gross_profit = sum((n for n in nets if n > 0), ZERO)
    gross_loss = -sum((n for n in nets if n < 0), ZERO)
    net = sum(nets, ZERO)
    by_symbol: dict[str, list[Decimal]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.symbol, []).append(trade.net_pnl)
    results = sorted(
        (SymbolResult(symbol, sum(values, ZERO), len(values)) for symbol, values in by_symbol.items()),
        key=lambda r: (r.net_pnl, r.symbol),
    )
    holds = [Decimal(t.closed_ms - t.opened_ms) / 60_000 for t in trades if t.closed_ms is not None]
    curve = [start_equity, *(s.equity for s in equity_curve), end_equity]
    return PeriodReport(
        title=title,
        start_ms=start_ms,
        end_ms=end_ms,
        start_equity=start_equity,
        end_equity=end_equity,
        trades=tuple(trades),
        wins=wins,
        losses=losses,
        win_rate=Decimal(wins) / len(trades) * HUNDRED if trades else ZERO,
        profit_factor=gross_profit / gross_loss if gross_loss > 0 else None,
        net_pnl=net,
        net_pnl_pct=net / start_equity * HUNDRED if start_equity > 0 else ZERO,
        fees=sum((t.fees for t in trades), ZERO),
        funding=sum((t.funding for t in trades), ZERO),
        max_drawdown_pct=max_drawdown_pct(curve),
        sl_count=sum(1 for t in trades if t.exit_reason is ExitReason.STOP_LOSS),
        tp_count=sum(1 for t in trades if t.exit_reason in (ExitReason.TP1, ExitReason.TP2)),
        avg_hold_minutes=sum(holds, ZERO) / len(holds) if holds else ZERO,
        best_symbols=tuple(r for r in reversed(results[-3:]) if r.net_pnl > 0),
        worst_symbols=tuple(r for r in results[:3] if r.net_pnl < 0),
        equity_curve=tuple(equity_curve),
        price_proxies=tuple(price_proxies),
    )
