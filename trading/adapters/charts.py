"""PNG charts of performance reports (SPEC T-5): equity curve + per-trade net PnL bars.

Built on a bare :class:`matplotlib.figure.Figure` (never pyplot: its global state is not safe in
worker threads), so callers render it off the event loop with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from trading.domain.views import PeriodReport, proxy_note

GREEN = "#2e9d57"
RED = "#d64545"
LINE = "#2f6db5"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _draw_equity(ax, report: PeriodReport) -> None:
    points = [(s.timestamp, s.equity) for s in report.equity_curve]
    if not points:
        # No sample stored yet: the period's start equity is still a meaningful single point.
        points = [(report.start_ms, report.start_equity)]
    xs = [_utc(ts) for ts, _ in points]
    ys = [float(equity) for _, equity in points]  # floats only for drawing, never for money maths
    ax.plot(xs, ys, color=LINE, linewidth=1.4, marker="o" if len(points) < 3 else None)
    if report.end_ms > report.start_ms:
        # Span the whole period, so a lone sample does not get a years-wide autoscaled axis.
        ax.set_xlim(_utc(report.start_ms), _utc(report.end_ms))
    locator = AutoDateLocator(tz=timezone.utc)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=timezone.utc))
    ax.set_title("Equity (UTC)", fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)


def _draw_trades(ax, report: PeriodReport) -> None:
    ax.set_title("Net PnL per trade", fontsize=10, loc="left")
    if not report.trades:
        ax.text(0.5, 0.5, "no trades", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    pnls = [float(t.net_pnl) for t in report.trades]
    xs = range(1, len(pnls) + 1)
    ax.bar(xs, pnls, color=[GREEN if p >= 0 else RED for p in pnls])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("trade #")
    if len(pnls) <= 20:  # beyond that the integer labels overlap; let matplotlib pick ticks
        ax.set_xticks(list(xs))
    ax.grid(True, axis="y", alpha=0.3)


def render_report_chart(report: PeriodReport) -> bytes:
    """Render ``report`` as a two-panel PNG (equity curve, per-trade net PnL) and return its bytes.

    Works with no trades and with zero or one equity sample. CPU-bound: call it through
    ``asyncio.to_thread`` from async code.
    """
    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    equity_ax, trades_ax = fig.subplots(2, 1, height_ratios=(3, 2))
    note = proxy_note(report.price_proxies)  # SPEC S-6: proxy prices are labelled on the chart too
    fig.suptitle(report.title + (f"\n{note}" if note else ""), fontsize=12 if not note else 10)
    _draw_equity(equity_ax, report)
    _draw_trades(trades_ax, report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
