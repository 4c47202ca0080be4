"""The engine's risk state: per-bot day counters and stops (SPEC R-2, R-3, R-4), the UTC day
roll-over, pauses (R-7), the symbol blacklist (R-6), the F-4 entry log and the drawdown stage
(R-5). Small transitions with the clock passed in (STYLE: freqtrade protections); each change
is emitted as an event so the persister stores it and the notifier announces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal

from trading.domain.config import AccountConfig, BotProfile
from trading.domain.events import Alert, BlacklistChanged, EventSink, RiskStateChanged
from trading.domain.filters import EntryLog
from trading.domain.models import ZERO, ExitReason, Position, RiskState, SymbolBlacklist, TradingState
from trading.domain.reasons import DrawdownStage, ReasonCode
from trading.domain.risk import daily_loss_pct, drawdown_stage, trading_state

DAY_MS = 86_400_000
_TAKE_PROFITS = frozenset({ExitReason.TP1, ExitReason.TP2, ExitReason.TP3, ExitReason.STEP_TP, ExitReason.AUTO_PROFIT})


def utc_day(timestamp_ms: int) -> str:
    """'YYYY-MM-DD' of an epoch ms UTC timestamp."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass(slots=True)
class RiskBook:
    """Risk counters of every bot of one account.

    Args: account (the account rules: daily loss limit, drawdown thresholds), profiles (bot name
    → profile), sink (events).
    """

    account_rules: AccountConfig
    profiles: dict[str, BotProfile]
    sink: EventSink
    states: dict[str, RiskState] = field(default_factory=dict)
    paused: dict[str, set[str]] = field(default_factory=dict)
    blacklist: dict[tuple[str, str], SymbolBlacklist] = field(default_factory=dict)
    entry_logs: dict[str, EntryLog] = field(default_factory=dict)  # F-4 per bot
    next_day_ms: int = 0

    def __post_init__(self) -> None:
        for name in self.profiles:
            self.paused.setdefault(name, set())

    # ------------------------------------------------------------ queries
    def stage(self, peak_equity: Decimal | None, equity: Decimal) -> DrawdownStage:
        """SPEC R-5 stage for ``equity`` against ``peak_equity`` (quote; None = not started)."""
        if peak_equity is None:
            return DrawdownStage.NONE
        rules = self.account_rules
        return drawdown_stage(peak_equity, equity, reduce_pct=rules.drawdown_reduce_pct,
                              reduce_quote=rules.drawdown_reduce_quote, pause_pct=rules.drawdown_pause_pct,
                              pause_quote=rules.drawdown_pause_quote)

    def state_of(self, bot: str, stage: DrawdownStage) -> TradingState:
        """ACTIVE / REDUCING / HALTED of ``bot`` (its day stop, the account's drawdown stage)."""
        state = self.states.get(bot)
        return trading_state("" if state is None else state.halted_reason, stage)

    def halted_reason(self, bot: str) -> str:
        """The day stop holding ``bot`` ('' when none): SL_STREAK, DAILY_LOSS_LIMIT, …"""
        state = self.states.get(bot)
        return "" if state is None else state.halted_reason

    def is_paused(self, bot: str, symbol: str) -> bool:
        """SPEC R-7: True when ``symbol`` is paused for ``bot``."""
        return symbol in self.paused.get(bot, ())

    def blacklisted_until(self, bot: str, symbol: str) -> int | None:
        """SPEC R-6: epoch ms UTC until which ``symbol`` is blocked for ``bot``, or None."""
        entry = self.blacklist.get((bot, symbol))
        return None if entry is None else entry.blocked_until_ms

    def entry_log(self, bot: str) -> EntryLog:
        """The F-4 entry log of ``bot`` (created empty)."""
        log = self.entry_logs.get(bot)
        if log is None:
            log = self.entry_logs[bot] = EntryLog()
        return log

    def realised_today(self) -> Decimal:
        """Realised PnL of every bot today (quote), for the account's R-3 day loss."""
        return sum((s.realised_today for s in self.states.values()), ZERO)

    # -------------------------------------------------------- transitions
    def set_state(self, state: RiskState) -> None:
        """Store and emit ``state``."""
        self.states[state.bot] = state
        self.sink.emit(RiskStateChanged(state))

    def halt(self, bot: str, reason: str) -> None:
        """Stop ``bot``'s entries for the rest of the UTC day (R-2, R-3, R-4), once."""
        state = self.states.get(bot)
        if state is not None and not state.halted_reason:
            self.set_state(replace(state, halted_reason=reason))

    def clear_stop(self, bot: str) -> str:
        """Lift ``bot``'s day stop by hand (a confirmed /resume, SPEC T-1); returns the reason
        it had ('' if none)."""
        state = self.states.get(bot)
        if state is None or not state.halted_reason:
            return ""
        self.set_state(replace(state, halted_reason=""))
        return state.halted_reason

    def set_paused(self, bot: str, symbol: str, paused: bool) -> bool:
        """SPEC R-7: pause or resume ``symbol`` for ``bot``; True when that changed anything."""
        symbols = self.paused.setdefault(bot, set())
        if paused == (symbol in symbols):
            return False
        if paused:
            symbols.add(symbol)
        else:
            symbols.discard(symbol)
        return True

    def roll_day(self, now_ms: int, equity: Decimal) -> None:
        """UTC day roll-over: every bot starts the day with fresh counters at ``equity``."""
        day = utc_day(now_ms)
        for name in self.profiles:
            state = self.states.get(name)
            if state is None or state.day != day:
                self.set_state(RiskState(name, day, equity))
        self.next_day_ms = now_ms - now_ms % DAY_MS + DAY_MS

    def take_profit_seen(self, bot: str) -> RiskState | None:
        """SPEC R-2: a take-profit resets the stop-loss streak; returns the new state unsaved."""
        state = self.states.get(bot)
        return None if state is None else replace(state, sl_streak=0)

    def trade_closed(self, closed: Position, reason: ExitReason, now_ms: int, sl_streak_limit: int,
                     state: RiskState | None) -> None:
        """Book a closed trade in ``state`` (the bot's state, already reset by a take-profit):
        streak (R-2), realised PnL and profit factor of the day (R-3, R-4); the bot halts for
        the day when its streak or the account's realised day loss reaches the limit. A
        stop-loss also counts towards the symbol blacklist (R-6)."""
        if reason is ExitReason.STOP_LOSS:
            self.count_stop_loss(closed.bot, closed.symbol, now_ms)
        if state is None:
            return
        streak = state.sl_streak + 1 if reason is ExitReason.STOP_LOSS else state.sl_streak
        net = closed.net_pnl
        state = replace(
            state,
            sl_streak=streak,
            realised_today=state.realised_today + net,
            trades_today=state.trades_today + 1,
            gross_profit_today=state.gross_profit_today + max(net, ZERO),
            gross_loss_today=state.gross_loss_today - min(net, ZERO),
        )
        if not state.halted_reason and streak >= sl_streak_limit:
            state = replace(state, halted_reason=ReasonCode.SL_STREAK)
        loss = daily_loss_pct(
            sum((s.realised_today for b, s in self.states.items() if b != state.bot), ZERO) + state.realised_today,
            state.day_start_equity,
        )
        if not state.halted_reason and loss >= self.account_rules.daily_loss_limit_pct:
            state = replace(state, halted_reason=ReasonCode.DAILY_LOSS_LIMIT)
        self.set_state(state)

    def count_stop_loss(self, bot: str, symbol: str, now_ms: int) -> None:
        """SPEC R-6: the Nth stop-loss on a symbol blocks it for ``blacklist_minutes``."""
        profile = self.profiles[bot]
        entry = self.blacklist.get((bot, symbol)) or SymbolBlacklist(bot, symbol)
        count = entry.stop_losses + 1
        if count >= profile.blacklist_stop_losses:
            entry = SymbolBlacklist(bot, symbol, 0, now_ms + profile.blacklist_minutes * 60_000)
            self.sink.emit(Alert("SYMBOL_BLACKLISTED", bot, symbol,
                                 f"{count} stop-losses: {symbol} paused {profile.blacklist_minutes} min"))
        else:
            entry = replace(entry, stop_losses=count)
        self.blacklist[(bot, symbol)] = entry
        self.sink.emit(BlacklistChanged(entry))
