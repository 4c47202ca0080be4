"""The KPI block of the daily report and of ``optiflow backtest`` as plain text lines (SPEC T-5,
§11): each KPI with its mark (✅ / ⚠️ / ❌), its value, the targets and the previous tier's figure.
No aiogram here, so the backtest can print it without importing the chat stack."""

from __future__ import annotations

from decimal import Decimal

from trading.domain.kpi import KpiLine, KpiReport

LABELS = {
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "avg_rr": "Average R:R",
    "daily_return": "Daily return",
    "max_drawdown": "Max drawdown",
    "rodc": "RODC (return on deployed capital)",
    "rpt": "RPT (return per trade)",
    "cur": "CUR (capital utilisation)",
    "avg_hold": "Average hold",
}


def kpi_value(key: str, value: Decimal | None, quote: str) -> str:
    """One KPI value as a trader reads it (n/a when there is none)."""
    if value is None:
        return "n/a (no losing trade)" if key == "profit_factor" else "n/a"
    if key == "profit_factor":
        return f"{value:.2f}"
    if key == "avg_rr":
        return f"1:{value:.2f}"
    if key == "rpt":
        return f"{value:+,.2f} {quote}"
    if key == "avg_hold":
        return f"{value:.1f} min"
    if key in ("daily_return", "rodc"):
        return f"{value:+.2f} %"
    return f"{value:.2f} %"


def kpi_line(line: KpiLine, quote: str, previous_tier: str = "") -> str:
    """``✅ Win rate 61.20 % (target 55 % / 60 % / 65 %) · previous tier 120-300: 48.00 %``."""
    mark = f"{line.mark} " if line.mark else "• "
    text = f"{mark}{LABELS[line.key]}: {kpi_value(line.key, line.value, quote)} ({line.target})"
    if previous_tier:
        text += f" · tier {previous_tier}: {kpi_value(line.key, line.previous, quote)}"
    return text


def kpi_lines(report: KpiReport | None, quote: str) -> list[str]:
    """The KPI block: a heading naming the tier whose targets apply, then one line per KPI."""
    if report is None:
        return []
    head = f"KPIs vs §11 targets (min / goal / excellent, tier {report.tier})"
    if report.previous_tier:
        head += f", beside the previous tier {report.previous_tier}"
    return [head + ":", *(kpi_line(line, quote, report.previous_tier) for line in report.lines)]
