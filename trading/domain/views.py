"""Typed results of the trading service (the RPC facade the chat layer renders).

Handlers never compute: they call :class:`trading.app.service.TradingService` and format these.
Money in quote currency (Decimal), sizes in contracts, percentages as Decimal percent (1.5 = 1.5 %),
times epoch ms UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from trading.domain.kpi import KpiReport
from trading.domain.models import EquitySnapshot, Position, Side, TradingState


@dataclass(frozen=True, slots=True)
class PositionView:
    """An open position with its live numbers (SPEC T-2 /open).

    mark_price: last close seen; unrealised_pnl in quote; pnl_pct_on_margin in % of margin;
    notional and margin in quote; the liquidation price (the exchange's in demo/live, else
    estimated from Binance's maintenance-margin brackets) and its distance; the next funding.
    """

    position_id: str
    bot: str
    symbol: str
    side: Side
    contracts: Decimal
    entry_price: Decimal
    mark_price: Decimal
    unrealised_pnl: Decimal
    pnl_pct_on_margin: Decimal
    notional: Decimal
    margin: Decimal
    stop_loss: Decimal
    take_profit_1: Decimal
    take_profit_2: Decimal
    tp1_done: bool
    opened_ms: int
    liquidation_price: Decimal | None = None  # quote; None = unknown
    liquidation_source: str = ""  # "exchange" (demo/live) or "estimate" (from the margin brackets)
    liquidation_distance_pct: Decimal | None = None  # from the mark, in % of the mark
    next_funding_rate: Decimal | None = None  # fraction (0.0001 = 0.01 %) applied at next_funding_ms
    next_funding_ms: int | None = None
    next_funding_amount: Decimal | None = None  # quote this position receives (+) or pays (−) at it


@dataclass(frozen=True, slots=True)
class Summary:
    """Account overview (SPEC T-2 /summary): balance = wallet (realised), equity = balance +
    unrealised PnL, daily loss used vs limit in % of day-start equity (SPEC R-3)."""

    mode: str
    quote: str
    balance: Decimal
    equity: Decimal
    unrealised_pnl: Decimal
    realised_pnl_total: Decimal
    trading_state: TradingState
    state_reason: str
    sl_streak: int
    sl_streak_limit: int
    daily_loss_used_pct: Decimal
    daily_loss_limit_pct: Decimal
    positions: tuple[PositionView, ...]
    paused_symbols: tuple[str, ...]
    closed_trades: int
    clock_ms: int
    account_risk: "AccountRiskView | None" = None  # tier, launch stage, drawdown stage, hard limit, gate


@dataclass(frozen=True, slots=True)
class AccountRiskView:
    """The account-level risk lines /risk, /summary and the build card show (SPEC Z-4, Z-5, R-3,
    R-5, R-9, S-7): the equity tier in force and its hysteresis margin (%); the launch stage
    (0 = not the launch preset) with its limits and what the next step needs; the R-5 drawdown
    stage, whether the pause is latched, and the equity (quote) at which risk is reduced and
    entries pause; the R-3 daily limit and hard limit (% of day-start equity) and whether the
    hard limit closed everything today; R-9 whether risk / leverage are held below what the
    preset would give now (and why); the S-7 promotion gate's line ("" when not checked)."""

    tier: str
    tier_hysteresis_pct: Decimal
    launch_stage: int
    launch_limits: str
    launch_next: str
    drawdown_stage: str
    drawdown_paused: bool
    reduce_at: Decimal
    pause_at: Decimal
    daily_loss_limit_pct: Decimal
    daily_loss_hard_limit_pct: Decimal
    hard_limit_hit: bool
    held_by_r9: str
    gate: str = ""
    gate_passed: bool = False


@dataclass(frozen=True, slots=True)
class SymbolResult:
    """Net PnL (quote) and trade count of one symbol over a report period."""

    symbol: str
    net_pnl: Decimal
    trades: int


@dataclass(frozen=True, slots=True)
class PeriodReport:
    """Performance over a period (SPEC T-5, used by /daily and backtest).

    win_rate in %; profit_factor = gross profit / gross loss (None when there is no loss);
    net_pnl_pct in % of start equity; max_drawdown_pct in % of the running peak equity;
    avg_hold_minutes over the closed trades.
    """

    title: str
    start_ms: int
    end_ms: int
    start_equity: Decimal
    end_equity: Decimal
    trades: tuple[Position, ...]
    wins: int
    losses: int
    win_rate: Decimal
    profit_factor: Decimal | None
    net_pnl: Decimal
    net_pnl_pct: Decimal
    fees: Decimal
    funding: Decimal
    max_drawdown_pct: Decimal
    sl_count: int
    tp_count: int
    avg_hold_minutes: Decimal
    best_symbols: tuple[SymbolResult, ...]
    worst_symbols: tuple[SymbolResult, ...]
    equity_curve: tuple[EquitySnapshot, ...] = field(default=())
    price_proxies: tuple[tuple[str, str], ...] = field(default=())
    """(symbol, source symbol) for prices replayed from another market's candles (SPEC S-6)."""
    kpis: KpiReport | None = None
    """RODC, RPT, CUR, average R:R, daily return, max drawdown… against the §11 targets (T-5)."""
    funding_by_symbol: tuple[tuple[str, Decimal], ...] = field(default=())
    """Funding of the period's trades per symbol (quote, + received), the day's summary."""


def proxy_note(proxies: tuple[tuple[str, str], ...]) -> str:
    """The "proxy" label every report carries when prices came from another market's candles
    (SPEC S-6), e.g. ``proxy prices: XRP/USDC:USDC ← XRP/USDT:USDT candles``; "" when none."""
    if not proxies:
        return ""
    return "proxy prices: " + ", ".join(f"{symbol} ← {source} candles" for symbol, source in proxies)


@dataclass(frozen=True, slots=True)
class BotRisk:
    """One bot's RiskGuard counters today (SPEC R-1, R-2, R-4): profit_factor_today is None
    without a losing trade; halted_reason is "" while entries are allowed."""

    bot: str
    open_positions: int
    max_positions: int
    sl_streak: int
    sl_streak_limit: int
    trades_today: int
    profit_factor_today: Decimal | None
    halted_reason: str
    risk_pct: Decimal = Decimal(0)  # risk per trade in force now (preset, tier, launch stage, R-9)
    leverage: int = 0  # leverage in force now (×)


@dataclass(frozen=True, slots=True)
class SymbolRisk:
    """SPEC R-6 per bot and symbol: stop-losses counted toward the blacklist and the block's
    end (epoch ms UTC; None = not blocked); paused = R-7 manual pause."""

    bot: str
    symbol: str
    stop_losses: int
    blocked_until_ms: int | None
    paused: bool
    blacklist_limit: int = 3  # stop-losses that block the symbol


@dataclass(frozen=True, slots=True)
class RiskReport:
    """What /risk shows: account trading state, R-3 daily loss used vs limit (% of day-start
    equity), R-5 drawdown (stage NONE / REDUCE / PAUSE; % and quote below peak equity), then
    per bot and per symbol counters."""

    trading_state: TradingState
    state_reason: str
    equity: Decimal
    peak_equity: Decimal
    drawdown_pct: Decimal
    drawdown_quote: Decimal
    drawdown_stage: str
    daily_loss_used_pct: Decimal
    daily_loss_limit_pct: Decimal
    bots: tuple[BotRisk, ...]
    symbols: tuple[SymbolRisk, ...]
    clock_ms: int
    drawdown_risk_multiplier: Decimal = Decimal("0.5")  # risk × this at the REDUCE stage
    account_risk: AccountRiskView | None = None


@dataclass(frozen=True, slots=True)
class CloseResult:
    """A manual close sent (SPEC T-2 /close, /closeall): the reduce-only market order's client
    order id and size (contracts); it fills at the next price the exchange sees."""

    bot: str
    symbol: str
    side: Side
    contracts: Decimal
    client_order_id: str


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What /runtime shows (SPEC T-2): uptime (s, wall clock), mode, the engine clock (epoch ms
    UTC, the last candle seen), the market feed's state ("replaying", "replay finished", ...),
    whether the monitor would call it stale (M-1), and loop timings of the candle loop (ms per
    candle, None when not measured yet)."""

    mode: str
    uptime_s: int
    clock_ms: int
    feed_state: str
    feed_stale: bool
    symbols: tuple[str, ...]
    open_positions: int
    open_orders: int
    loop_avg_ms: float | None
    loop_max_ms: float | None
