"""RiskGuard: an ordered pipeline of small pre-trade checks (SPEC R-1, R-2, R-3, R-7, S-5).

Each check returns ``None`` (pass) or a denying :class:`RiskDecision` with an UPPER_SNAKE reason
code and a detail such as ``positions=2 max=2``. The pipeline fails closed: missing equity or
price denies (``MISSING_DATA``). Cancels and closes never pass through here, so they always go
through (HALTED blocks entries only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from trading.domain.models import RiskDecision, TradingState
from trading.domain.reasons import DAY_STOP_REASONS, DrawdownStage, ReasonCode  # noqa: F401 (re-export)

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class RiskContext:
    """Everything the entry checks look at, captured at decision time.

    equity / day_start_equity / daily_pnl in quote (daily_pnl = realised today + unrealised of
    open positions; negative is a loss); price in quote; hour_utc 0–23; hours as [start, end).
    """

    bot: str
    symbol: str
    hour_utc: int
    price: Decimal | None
    equity: Decimal | None
    day_start_equity: Decimal | None
    daily_pnl: Decimal | None
    open_positions_bot: int
    max_positions_bot: int
    open_positions_account: int
    max_positions_account: int
    symbol_busy: bool
    paused: bool
    sl_streak: int
    sl_streak_limit: int
    daily_loss_limit_pct: Decimal
    halted_reason: str
    trading_hours_utc: tuple[int, int]
    blackout_hours_utc: tuple[int, int]
    symbol_held_by: str = ""  # another bot holding a position on this symbol (one-way mode)
    blacklisted_until_ms: int | None = None
    now_ms: int = 0
    trades_today: int = 0
    profit_factor_today: Decimal | None = None  # R-4; None = no losing trade today
    min_trades_for_profit_factor: int = 10
    min_profit_factor: Decimal = Decimal(1)
    drawdown_stage: DrawdownStage = DrawdownStage.NONE
    max_trades_per_day: int | None = None  # Z-4 scaling preset; None = no cap
    pair_allowed: bool = True  # Z-4 pair universe of the equity tier


Check = Callable[[RiskContext], RiskDecision | None]


def _in_hours(hour: int, window: tuple[int, int]) -> bool:
    start, end = window
    if start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end  # window across midnight


def check_data(ctx: RiskContext) -> RiskDecision | None:
    """Fail closed when equity, price or the day's PnL is unknown."""
    if ctx.price is None or ctx.price <= 0 or ctx.equity is None or ctx.equity <= 0:
        return RiskDecision(False, ReasonCode.MISSING_DATA, f"price={ctx.price} equity={ctx.equity}")
    if ctx.day_start_equity is None or ctx.daily_pnl is None:
        return RiskDecision(False, ReasonCode.MISSING_DATA, "no day-start equity")
    return None


def check_halted(ctx: RiskContext) -> RiskDecision | None:
    """Entries stay stopped for the rest of the UTC day once a daily rule fired (R-2, R-3)."""
    if ctx.halted_reason:
        return RiskDecision(False, ctx.halted_reason, "entries stopped for the rest of the UTC day")
    return None


def check_paused(ctx: RiskContext) -> RiskDecision | None:
    """SPEC R-7: a symbol paused from Telegram takes no entries."""
    if ctx.paused:
        return RiskDecision(False, ReasonCode.SYMBOL_PAUSED, ctx.symbol)
    return None


def check_hours(ctx: RiskContext) -> RiskDecision | None:
    """SPEC S-5: never enter in the blackout window; enter only inside trading hours."""
    if _in_hours(ctx.hour_utc, ctx.blackout_hours_utc):
        return RiskDecision(False, ReasonCode.BLACKOUT_HOURS, f"hour={ctx.hour_utc} UTC")
    if not _in_hours(ctx.hour_utc, ctx.trading_hours_utc):
        return RiskDecision(False, ReasonCode.OUTSIDE_TRADING_HOURS, f"hour={ctx.hour_utc} UTC")
    return None


def check_symbol_free(ctx: RiskContext) -> RiskDecision | None:
    """One position (or pending entry) per symbol: the exchange nets positions per symbol in
    one-way mode, so two bots on one symbol would close each other's contracts (B-1)."""
    if ctx.symbol_busy:
        return RiskDecision(False, ReasonCode.POSITION_OPEN, ctx.symbol)
    if ctx.symbol_held_by:
        return RiskDecision(False, ReasonCode.SYMBOL_HELD_BY_OTHER_BOT, f"{ctx.symbol} held by {ctx.symbol_held_by}")
    return None


def check_pair_universe(ctx: RiskContext) -> RiskDecision | None:
    """SPEC Z-4: the pair must be in the equity tier's universe (never BTC/ETH below 500)."""
    if not ctx.pair_allowed:
        return RiskDecision(False, ReasonCode.PAIR_NOT_IN_TIER, f"{ctx.symbol} at equity {ctx.equity}")
    return None


def check_trades_per_day(ctx: RiskContext) -> RiskDecision | None:
    """SPEC Z-4 (scaling preset): at most the tier's trades per UTC day (open ones count)."""
    if ctx.max_trades_per_day is None:
        return None
    used = ctx.trades_today + ctx.open_positions_bot
    if used >= ctx.max_trades_per_day:
        return RiskDecision(False, ReasonCode.MAX_TRADES_PER_DAY, f"trades={used} max={ctx.max_trades_per_day}")
    return None


def check_blacklist(ctx: RiskContext) -> RiskDecision | None:
    """SPEC R-6: after 3 stop-losses on a symbol it takes no entries for 120 min."""
    if ctx.blacklisted_until_ms is not None and ctx.now_ms < ctx.blacklisted_until_ms:
        minutes = (ctx.blacklisted_until_ms - ctx.now_ms + 59_999) // 60_000
        return RiskDecision(False, ReasonCode.SYMBOL_BLACKLISTED, f"{ctx.symbol} for {minutes} more min")
    return None


def check_drawdown(ctx: RiskContext) -> RiskDecision | None:
    """SPEC R-5: a drawdown beyond the pause stage stops all entries (account level) until a
    confirmed /resume."""
    if ctx.drawdown_stage is DrawdownStage.PAUSE:
        return RiskDecision(False, ReasonCode.DRAWDOWN_PAUSE,
                            "drawdown beyond the pause threshold (the greater of 15 % or 100 quote below the peak)")
    return None


def check_profit_factor(ctx: RiskContext) -> RiskDecision | None:
    """SPEC R-4: today's profit factor < 1.0 after ≥ 10 trades stops entries for the day."""
    if ctx.trades_today < ctx.min_trades_for_profit_factor:
        return None
    pf = ctx.profit_factor_today
    if pf is not None and pf < ctx.min_profit_factor:
        return RiskDecision(False, ReasonCode.DAILY_PROFIT_FACTOR, f"pf={pf:.2f} after {ctx.trades_today} trades")
    return None


def check_max_positions(ctx: RiskContext) -> RiskDecision | None:
    """SPEC R-1: max concurrent positions per bot and per account."""
    if ctx.open_positions_bot >= ctx.max_positions_bot:
        return RiskDecision(
            False, ReasonCode.MAX_POSITIONS, f"positions={ctx.open_positions_bot} max={ctx.max_positions_bot}"
        )
    if ctx.open_positions_account >= ctx.max_positions_account:
        return RiskDecision(
            False,
            ReasonCode.MAX_POSITIONS_ACCOUNT,
            f"positions={ctx.open_positions_account} max={ctx.max_positions_account}",
        )
    return None


def check_sl_streak(ctx: RiskContext) -> RiskDecision | None:
    """SPEC R-2: N stop-losses in a row stop new entries for the rest of the UTC day."""
    if ctx.sl_streak >= ctx.sl_streak_limit:
        return RiskDecision(False, ReasonCode.SL_STREAK, f"streak={ctx.sl_streak} limit={ctx.sl_streak_limit}")
    return None


def daily_loss_pct(daily_pnl: Decimal, day_start_equity: Decimal) -> Decimal:
    """Loss of the day in % of day-start equity (0 when the day is in profit)."""
    if day_start_equity <= 0 or daily_pnl >= 0:
        return Decimal(0)
    return -daily_pnl / day_start_equity * HUNDRED


def check_daily_loss(ctx: RiskContext) -> RiskDecision | None:
    """SPEC R-3: realised + unrealised loss ≥ limit % of day-start equity stops entries."""
    assert ctx.daily_pnl is not None and ctx.day_start_equity is not None  # check_data ran first
    used = daily_loss_pct(ctx.daily_pnl, ctx.day_start_equity)
    if used >= ctx.daily_loss_limit_pct:
        return RiskDecision(
            False, ReasonCode.DAILY_LOSS_LIMIT, f"loss={used:.2f}% limit={ctx.daily_loss_limit_pct}%"
        )
    return None


# Order matters: data first (fail closed), then the day's stop, then cheap per-symbol checks.
ENTRY_CHECKS: tuple[Check, ...] = (
    check_data,
    check_halted,
    check_drawdown,
    check_paused,
    check_hours,
    check_symbol_free,
    check_pair_universe,
    check_blacklist,
    check_max_positions,
    check_trades_per_day,
    check_sl_streak,
    check_daily_loss,
    check_profit_factor,
)



def drawdown_threshold(base: Decimal, pct: Decimal, quote: Decimal) -> Decimal:
    """SPEC R-5 "the greater of pct % or quote": the fall below ``base`` equity (quote) that
    reaches a stage, e.g. base 400, 8 %, 50 → max(32, 50) = 50 quote."""
    return max(base * pct / HUNDRED, quote)


def drawdown_stage(
    peak_equity: Decimal,
    equity: Decimal,
    *,
    reduce_pct: Decimal,
    reduce_quote: Decimal,
    pause_pct: Decimal,
    pause_quote: Decimal,
    pause_from: Decimal | None = None,
) -> DrawdownStage:
    """SPEC R-5 stage from the fall below peak equity (quote; seed 000): PAUSE when the fall
    reaches the greater of pause_pct % and pause_quote, REDUCE when it reaches the greater of
    reduce_pct % and reduce_quote, else NONE. A 400 peak reduces at 350 and pauses at 300.
    ``pause_from``: the equity a pause is measured from when it is not the peak (the equity at
    the last confirmed resume, and the highs after it)."""
    if peak_equity <= 0:
        return DrawdownStage.NONE
    base = peak_equity if pause_from is None else min(pause_from, peak_equity)
    if base > 0 and base - equity >= drawdown_threshold(base, pause_pct, pause_quote):
        return DrawdownStage.PAUSE
    if peak_equity - equity >= drawdown_threshold(peak_equity, reduce_pct, reduce_quote):
        return DrawdownStage.REDUCE
    return DrawdownStage.NONE


class RiskGuard:
    """Runs the entry checks in order and returns the first denial (or allow)."""

    def __init__(self, checks: Sequence[Check] = ENTRY_CHECKS) -> None:
        self._checks = tuple(checks)

    def check_entry(self, ctx: RiskContext) -> RiskDecision:
        """The first denying check's decision, or allow. An exception inside a check denies
        (``RISK_CHECK_ERROR``): the guard fails closed."""
        for check in self._checks:
            try:
                decision = check(ctx)
            except Exception as exc:  # noqa: BLE001 - fail closed on any bug or bad data
                return RiskDecision(False, ReasonCode.RISK_CHECK_ERROR, f"{check.__name__}: {exc!r}")
            if decision is not None:
                return decision
        return RiskDecision.allow()


def trading_state(halted_reason: str, stage: DrawdownStage = DrawdownStage.NONE) -> TradingState:
    """HALTED while a day stop or the R-5 pause holds, REDUCING at the R-5 reduce stage (risk
    × 0.5), else ACTIVE. HALTED blocks entries only: cancels and closes always pass."""
    if halted_reason or stage is DrawdownStage.PAUSE:
        return TradingState.HALTED
    return TradingState.REDUCING if stage is DrawdownStage.REDUCE else TradingState.ACTIVE
