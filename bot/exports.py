"""Trades as CSV (backtest ``trades.csv``, /dailycsv, SPEC T-2/T-5): one row per closed trade;
money in quote at full Decimal precision, so the columns sum exactly to the report's totals and
net_pnl = realised_pnl − fees + funding on every row. Times are ISO-8601 UTC."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal

from trading.domain.models import Position

CSV_FIELDS = (
    "position_id", "bot", "symbol", "side", "contracts", "entry_price", "exit_price",
    "opened_utc", "closed_utc", "exit_reason", "realised_pnl", "fees", "funding", "net_pnl",
)


def iso_utc(ms: int | None) -> str:
    """Epoch ms → ``YYYY-MM-DDTHH:MM:SSZ``; None → empty."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain(value: Decimal) -> str:
    """Fixed-point text of a Decimal (no exponent), trailing zeros kept as computed."""
    return format(value, "f")


def write_trades_csv(handle, trades: Iterable[Position]) -> None:
    """Write the header and one row per trade to the text ``handle``."""
    writer = csv.writer(handle)
    writer.writerow(CSV_FIELDS)
    for t in trades:
        writer.writerow([
            t.position_id, t.bot, t.symbol, t.side.value, t.initial_contracts, t.entry_price,
            plain(t.exit_price) if t.exit_price is not None else "", iso_utc(t.opened_ms),
            iso_utc(t.closed_ms), t.exit_reason.value if t.exit_reason else "",
            plain(t.realised_pnl), plain(t.fees), plain(t.funding), plain(t.net_pnl),
        ])


def trades_csv(trades: Iterable[Position]) -> bytes:
    """The trades as UTF-8 CSV bytes (for a Telegram document)."""
    buffer = io.StringIO(newline="")
    write_trades_csv(buffer, trades)
    return buffer.getvalue().encode("utf-8")
