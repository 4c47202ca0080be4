"""Views (``trading.domain.views``) → Telegram text, as aiogram ``formatting`` nodes.

Pure functions, no I/O. Send a result with ``message.answer(**part.as_kwargs())`` for each
``part`` of :func:`split_text` (Telegram caps a message at 4096 UTF-16 units, SPEC T-4).
Conventions: money with 2 decimals + quote, prices and sizes exactly as given (already at tick /
step size), percentages with 2 decimals, times UTC ``YYYY-MM-DD HH:MM``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal

from aiogram.utils.formatting import (
    Bold,
    Code,
    Text,
    as_key_value,
    as_line,
    as_list,
    as_marked_section,
)

from bot.kpi_text import kpi_lines
from trading.domain.views import (
    AccountRiskView,
    BotRisk,
    PeriodReport,
    PositionView,
    RiskReport,
    Summary,
    SymbolResult,
    SymbolRisk,
    proxy_note,
)

MESSAGE_LIMIT = 4096

# (category, ((command, description), ...)) — the one list behind /help and the command menu (T-2).
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Status", (
        ("summary", "balance, equity, risk state, open positions"),
        ("open", "open positions with entry, PnL, SL, TP1/TP2: /open [bot]"),
        ("status", "trading state, paused symbols, halted bots"),
        ("risk", "risk state, drawdown, daily loss, SL streaks, blacklist: /risk [bot]"),
        ("runtime", "uptime, mode, feed state, loop timings"),
    )),
    ("Control", (
        ("pause", "pause entries: /pause [SYMBOL|bot|all], no argument = toggles"),
        ("resume", "resume entries: /resume [SYMBOL|bot|all]"),
        ("close", "close a position at market (confirmed): /close SYMBOL"),
        ("closeall", "close every position at market (confirmed)"),
        ("shutdown", "stop the bot (confirmed)"),
    )),
    ("Analytics", (
        ("daily", "daily report + chart: /daily [YYYY-MM-DD]"),
        ("dailycsv", "that day's trades as a CSV file: /dailycsv [YYYY-MM-DD]"),
        ("signalstats", "signals evaluated / passed per symbol: /signalstats [hours]"),
        ("failstats", "blocked signals per symbol and why: /failstats [hours]"),
        ("blockers", "which filters block signals most: /blockers [hours]"),
        ("near", "signals that almost passed: /near [n]"),
        ("topmissed", "symbols losing most signals to filters: /topmissed [n]"),
        ("filters", "current thresholds of each bot: /filters [bot]"),
        ("chart", "candles with the bot's entries, exits, stop, targets: /chart SYMBOL [hours]"),
        ("optimize", "walk-forward parameter study in the background: /optimize NAME|status"),
    )),
    ("Ops", (
        ("playbook", "incident playbooks with safe actions: /playbook [incident]"),
        ("log", "the bot's recent log lines: /log [n]"),
        ("audit", "the audit trail and its hash chain check"),
        ("help", "this list"),
    )),
)


# ------------------------------------------------------------------ number formats
def money(value: Decimal, quote: str, *, signed: bool = False) -> str:
    """``1,234.57 USDT``; ``signed`` adds ``+`` to gains (PnL)."""
    return f"{value:{'+' if signed else ''},.2f} {quote}"


def pct(value: Decimal, *, signed: bool = False) -> str:
    """``1.50%`` (``value`` is already in percent)."""
    return f"{value:{'+' if signed else ''}.2f}%"


def plain(value: Decimal) -> str:
    """A price or size exactly as given, never in exponent form (``1E-7`` → ``0.0000001``)."""
    return format(value, "f")


def utc(ms: int) -> str:
    """Epoch ms → ``YYYY-MM-DD HH:MM`` UTC."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


# ----------------------------------------------------------------------- renderers
def render_start(mode: str) -> Text:
    """Greeting of /start with the trading mode."""
    return as_list(
        as_line(Bold("OptiFlow"), f" — {mode.upper()} mode", end=""),
        "Perpetual futures bot. Type /help for the commands.",
    )


def render_help() -> Text:
    """The implemented commands, by category (SPEC T-2)."""
    sections = [
        as_marked_section(Bold(category), *(as_line(f"/{cmd} — {desc}", end="") for cmd, desc in items))
        for category, items in COMMANDS
    ]
    return as_list(*sections, sep="\n\n")


def render_summary(summary: Summary) -> Text:
    """/summary: balance, equity, risk state, open positions (SPEC T-2)."""
    q = summary.quote
    state = summary.trading_state.value
    if summary.state_reason:
        state = f"{state} ({summary.state_reason})"
    lines: list[Text | str] = [
        as_line(Bold("Summary"), f" — {summary.mode.upper()}", end=""),
        as_key_value("Balance", money(summary.balance, q)),
        as_key_value("Equity", money(summary.equity, q)),
        as_key_value("Unrealised PnL", money(summary.unrealised_pnl, q, signed=True)),
        as_key_value("Realised PnL (total)", money(summary.realised_pnl_total, q, signed=True)),
        as_key_value("Risk state", state),
        as_key_value("SL streak", f"{summary.sl_streak}/{summary.sl_streak_limit}"),
        as_key_value(
            "Daily loss used",
            f"{pct(summary.daily_loss_used_pct)} of {pct(summary.daily_loss_limit_pct)} limit",
        ),
        *account_risk_lines(summary.account_risk, q, brief=True),
        as_key_value("Open positions", str(len(summary.positions))),
    ]
    lines += [
        as_line(
            "  • ", Code(p.symbol), f" {_side(p)} {plain(p.contracts)} @ {plain(p.entry_price)}",
            f", uPnL {money(p.unrealised_pnl, q, signed=True)}", end="",
        )
        for p in summary.positions
    ]
    lines += [
        as_key_value("Paused", ", ".join(summary.paused_symbols) if summary.paused_symbols else "none"),
        as_key_value("Closed trades", str(summary.closed_trades)),
        f"As of {utc(summary.clock_ms)} UTC",
    ]
    return as_list(*lines)


def account_risk_lines(view: AccountRiskView | None, quote: str, *, brief: bool = False) -> list[Text]:
    """The account-level risk lines of /summary (``brief``), /risk and the build card: equity
    tier (Z-4, R-9 hysteresis), launch stage (Z-5), drawdown stage (R-5), the hard daily limit
    (R-3), what R-9 holds down, and the live promotion gate (S-7)."""
    if view is None:
        return []
    lines = [as_key_value("Equity tier", f"{view.tier} (changes {pct(view.tier_hysteresis_pct)} past a boundary, R-9)")]
    if view.launch_stage:
        stage = f"{view.launch_stage}/6 — {view.launch_limits}"
        if view.launch_next and not brief:
            stage += f"; next: {view.launch_next}"
        lines.append(as_key_value("Launch stage", stage))
    stage_text = view.drawdown_stage + (" (latched until a confirmed /resume)" if view.drawdown_paused else "")
    if not brief:
        stage_text += f" — risk halves at {money(view.reduce_at, quote)}, entries pause at {money(view.pause_at, quote)}"
    lines.append(as_key_value("Drawdown stage", stage_text))
    hard = f"{pct(view.daily_loss_hard_limit_pct)} closes everything, halts to 00:00 UTC"
    if view.hard_limit_hit:
        hard = f"HIT today — {hard}"
    lines.append(as_key_value("Hard daily limit", hard))
    if view.held_by_r9:
        lines.append(as_key_value("Held by R-9", view.held_by_r9))
    if view.gate:
        lines.append(as_key_value("Live gate", ("✅ " if view.gate_passed else "❌ ") + view.gate))
    return lines


def _side(position: PositionView) -> str:
    return position.side.value.upper()


def _position_block(p: PositionView, quote: str) -> Text:
    tp1 = plain(p.take_profit_1) + (" ✓" if p.tp1_done else "")
    return as_list(
        as_line(Bold(p.symbol), f" {_side(p)} · bot {p.bot}", end=""),
        f"Entry {plain(p.entry_price)} · Mark {plain(p.mark_price)}",
        f"Contracts {plain(p.contracts)} · Notional {money(p.notional, quote)} · Margin {money(p.margin, quote)}",
        f"Unrealised PnL {money(p.unrealised_pnl, quote, signed=True)} "
        f"({pct(p.pnl_pct_on_margin, signed=True)} on margin)",
        f"SL {plain(p.stop_loss)} · TP1 {tp1} · TP2 {plain(p.take_profit_2)}",
        *_liquidation_and_funding(p, quote),
        f"Opened {utc(p.opened_ms)} UTC",
    )


def _liquidation_and_funding(p: PositionView, quote: str) -> list[str]:
    """The liquidation price and its distance (the exchange's, or an estimate), the next
    funding and what this position receives or pays at it."""
    lines = []
    if p.liquidation_price is not None:
        how = "exchange" if p.liquidation_source == "exchange" else "estimate from the margin brackets"
        lines.append(f"Liquidation {p.liquidation_price:.6g} ({pct(p.liquidation_distance_pct or Decimal(0))} "
                     f"from the mark, {how})")
    if p.next_funding_rate is not None and p.next_funding_ms is not None:
        amount = p.next_funding_amount or Decimal(0)
        verb = "you receive" if amount >= 0 else "you pay"
        lines.append(f"Next funding {p.next_funding_rate * 100:+.4f} % at {utc(p.next_funding_ms)} UTC: "
                     f"{verb} ≈ {money(abs(amount), quote)}")
    return lines


def render_positions(positions: list[PositionView], quote: str = "USDT", bot: str | None = None) -> Text:
    """/open [bot]: one block per position with entry, contracts, notional, PnL, SL, TP1/TP2;
    ``bot`` names the bot the list was filtered by (SPEC B-1)."""
    of_bot = f" of bot {bot}" if bot else ""
    if not positions:
        return Text(f"No open positions{of_bot}.")
    blocks = [_position_block(p, quote) for p in positions]
    return as_list(Bold(f"Open positions{of_bot} ({len(positions)})"), *blocks, sep="\n\n")


# Reason codes that stop entries, in words (SPEC R-2..R-5); unknown codes are shown as they are.
STOP_REASONS = {
    "SL_STREAK": "stop-loss streak, R-2",
    "DAILY_LOSS_LIMIT": "daily loss limit reached, R-3",
    "DAILY_PROFIT_FACTOR": "profit factor below the minimum today, R-4",
    "DRAWDOWN_PAUSE": "drawdown from peak equity, R-5",
    "DAILY_LOSS_HARD_LIMIT": "hard daily loss limit: everything closed until 00:00 UTC, R-3",
}

# SPEC R-5 drawdown stages, in words ({m} = the configured risk multiplier).
DRAWDOWN_STAGES = {
    "NONE": "NONE: full risk",
    "REDUCE": "REDUCE: risk × {m}",
    "PAUSE": "PAUSE: entries paused",
}


def _reason(code: str) -> str:
    words = STOP_REASONS.get(code)
    return f"{code} ({words})" if words else code


def _profit_factor(value: Decimal | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a (no losing trade)"


def _clock(ms: int, now_ms: int) -> str:
    """``HH:MM`` when ``ms`` falls on the day of ``now_ms``, else the full UTC date and time."""
    full = utc(ms)
    return full[11:] if full[:10] == utc(now_ms)[:10] else full


def _symbol_risk_line(s: SymbolRisk, now_ms: int) -> Text:
    parts = [f"{s.stop_losses}/{s.blacklist_limit} stop-losses toward blacklist"]
    if s.blocked_until_ms is not None:
        parts.append(f"blocked until {_clock(s.blocked_until_ms, now_ms)} UTC")
    if s.paused:
        parts.append("paused")
    return as_line("  • ", Code(s.symbol), " — ", ", ".join(parts), end="")


def _bot_risk_block(b: BotRisk, symbols: Iterable[SymbolRisk], now_ms: int) -> Text:
    entries = f"halted: {_reason(b.halted_reason)}" if b.halted_reason else "allowed"
    return as_list(
        as_line(Bold(f"Bot {b.bot}"), end=""),
        as_key_value("Entries", entries),
        *([as_key_value("Risk / leverage", f"{b.risk_pct} % per trade, {b.leverage}×")] if b.leverage else []),
        as_key_value("Positions", f"{b.open_positions}/{b.max_positions}"),
        as_key_value("SL streak", f"{b.sl_streak}/{b.sl_streak_limit}"),
        as_key_value("Trades today", str(b.trades_today)),
        as_key_value("Profit factor today", _profit_factor(b.profit_factor_today)),
        *(_symbol_risk_line(s, now_ms) for s in symbols if s.bot == b.bot),
    )


def render_risk(report: RiskReport, quote: str = "USDT") -> Text:
    """/risk [bot]: trading state and why, equity vs peak and the R-5 drawdown stage, R-3 daily
    loss used vs limit, then per bot its R-1/R-2/R-4 counters and per symbol the R-6 stop-losses
    toward the blacklist, the block's end and the R-7 pause (SPEC T-2)."""
    state = report.trading_state.value
    if report.state_reason:
        state = f"{state} — {_reason(report.state_reason)}"
    elif report.drawdown_stage == "REDUCE":
        state = f"{state} — drawdown: risk × {plain(report.drawdown_risk_multiplier)} (R-5)"
    stage = DRAWDOWN_STAGES.get(report.drawdown_stage, report.drawdown_stage).format(
        m=plain(report.drawdown_risk_multiplier)
    )
    account = as_list(
        as_line(Bold("Risk"), end=""),
        as_key_value("Trading state", state),
        as_key_value("Equity", f"{money(report.equity, quote)} (peak {money(report.peak_equity, quote)})"),
        as_key_value(
            "Drawdown",
            f"{pct(report.drawdown_pct)} / {money(report.drawdown_quote, quote)} below peak — stage {stage}",
        ),
        as_key_value(
            "Daily loss used", f"{pct(report.daily_loss_used_pct)} of {pct(report.daily_loss_limit_pct)} limit"
        ),
        *account_risk_lines(report.account_risk, quote),
    )
    blocks = [_bot_risk_block(b, report.symbols, report.clock_ms) for b in report.bots]
    return as_list(account, *blocks, Text(f"As of {utc(report.clock_ms)} UTC"), sep="\n\n")


def _symbols_line(label: str, results: Iterable[SymbolResult], quote: str) -> Text:
    parts = [
        f"{r.symbol} {money(r.net_pnl, quote, signed=True)} ({r.trades} trade{'' if r.trades == 1 else 's'})"
        for r in results
    ]
    return as_key_value(label, "; ".join(parts) if parts else "—")


def render_report(report: PeriodReport, quote: str = "USDT") -> Text:
    """/daily: trades, win rate, profit factor, PnL, fees, funding (per symbol: the day's funding
    summary), drawdown, best/worst, and the KPIs against the §11 targets (T-5)."""
    pf = f"{report.profit_factor:.2f}" if report.profit_factor is not None else "n/a (no losing trade)"
    return as_list(
        Bold(report.title),
        f"Period {utc(report.start_ms)} → {utc(report.end_ms)} UTC",
        as_key_value("Trades", f"{len(report.trades)} (wins {report.wins}, losses {report.losses})"),
        as_key_value("Win rate", pct(report.win_rate)),
        as_key_value("Profit factor", pf),
        as_key_value(
            "Net PnL", f"{money(report.net_pnl, quote, signed=True)} ({pct(report.net_pnl_pct, signed=True)})"
        ),
        as_key_value("Fees", money(report.fees, quote)),
        as_key_value("Funding", money(report.funding, quote, signed=True)),
        *([as_key_value("Funding by symbol", "; ".join(f"{symbol} {money(amount, quote, signed=True)}"
                                                        for symbol, amount in report.funding_by_symbol))]
          if report.funding_by_symbol else []),
        as_key_value("Max drawdown", pct(report.max_drawdown_pct)),
        as_key_value("SL / TP exits", f"{report.sl_count} / {report.tp_count}"),
        as_key_value("Avg hold", f"{report.avg_hold_minutes:.1f} min"),
        as_key_value("Equity", f"{money(report.start_equity, quote)} → {money(report.end_equity, quote)}"),
        _symbols_line("Best", report.best_symbols, quote),
        _symbols_line("Worst", report.worst_symbols, quote),
        *([f"⚠️ {proxy_note(report.price_proxies)}"] if report.price_proxies else []),  # SPEC S-6
        *kpi_lines(report.kpis, quote),  # T-5, §11
    )


def render_pause_menu() -> Text:
    """Header of the toggle keyboard; static so editing only the buttons keeps it true."""
    return Text("Entries per symbol — tap ⏸ to pause, ▶️ to resume.")


def render_paused(symbols: Iterable[str], pause: bool) -> Text:
    """Confirmation after ``/pause SYMBOL`` or ``/pause all`` (and /resume)."""
    symbols = list(symbols)
    verb = "Paused" if pause else "Resumed"
    what = symbols[0] if len(symbols) == 1 else f"all {len(symbols)} symbols"
    return Text(f"{verb} entries on {what}.")


def render_bot_paused(bot: str, pause: bool) -> Text:
    """Confirmation after ``/pause BOT`` or ``/resume BOT`` (SPEC R-7 per bot)."""
    return Text(f"{'Paused' if pause else 'Resumed'} entries on every symbol of bot {bot}.")


def render_usage(usage: str, problem: str | None = None) -> Text:
    """A bad argument: what was wrong (if known), then the usage line."""
    return as_list(problem, usage) if problem else Text(usage)


# ------------------------------------------------------------------------ splitting
def _size(node: Text | str) -> int:
    # Telegram counts UTF-16 code units, as aiogram's entity offsets do.
    return len(node) if isinstance(node, Text) else len(str(node).encode("utf-16-le")) // 2


def _pieces(node: Text | str, limit: int) -> list[Text | str]:
    """Break one node bigger than ``limit`` into nodes that fit, keeping its formatting."""
    if not isinstance(node, Text):
        node = str(node)
        # Cut after the last newline that fits, else hard; by code points, then re-check units.
        out: list[Text | str] = []
        while _size(node) > limit:
            cut = min(len(node), limit)
            while _size(node[:cut]) > limit:
                cut -= 1
            newline = node.rfind("\n", 0, cut)
            cut = newline + 1 if newline > 0 else cut
            out.append(node[:cut])
            node = node[cut:]
        return [*out, node] if node else out
    return [node.replace(*group) for group in _group(list(node), limit)]


def _group(nodes: list[Text | str], limit: int) -> list[list[Text | str]]:
    groups: list[list[Text | str]] = [[]]
    used = 0
    for node in nodes:
        size = _size(node)
        if size > limit:
            for piece in _pieces(node, limit):
                groups.append([piece])
            groups.append([])
            used = 0
            continue
        if used + size > limit:
            groups.append([])
            used = 0
        groups[-1].append(node)
        used += size
    return [g for g in (_trim(g) for g in groups) if g]


def _trim(group: list[Text | str]) -> list[Text | str]:
    # Separators ("\n", "\n\n") left at a cut would start or end a message with blank lines.
    while group and isinstance(group[0], str) and not group[0].strip():
        group = group[1:]
    while group and isinstance(group[-1], str) and not group[-1].strip():
        group = group[:-1]
    return group


def split_text(text: Text, limit: int = MESSAGE_LIMIT) -> list[Text]:
    """Split ``text`` into messages of at most ``limit`` UTF-16 units, at element boundaries
    (lines, blocks) where possible, keeping bold/code formatting intact."""
    if len(text) <= limit:
        return [text]
    return [text.replace(*group) for group in _group(list(text), limit)]
