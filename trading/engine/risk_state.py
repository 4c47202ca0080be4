"""The engine's risk state: per-bot day counters and stops (SPEC R-2, R-3, R-4), the UTC day
roll-over, pauses (R-7), the symbol blacklist (R-6), the F-4 entry log, the drawdown stage and
its latched pause (R-5), the equity tier with hysteresis and the no-martingale ceilings (R-9),
the losing streak, and the launch ramp (Z-5). Small transitions with the clock passed in
(STYLE: freqtrade protections); each change is emitted as an event so the persister stores it
and the notifier announces it (account-level steps as :class:`RiskNotice`, audited).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal

from trading.domain.config import AccountConfig, BotProfile
from trading.domain.events import (
    AccountRiskChanged,
    Alert,
    BlacklistChanged,
    EventSink,
    RiskNotice,
    RiskStateChanged,
)
from trading.domain.filters import EntryLog
from trading.domain.launch import LaunchRamp
from trading.domain.models import (
    ZERO,
    AccountRisk,
    ExitReason,
    Position,
    RiskState,
    SymbolBlacklist,
    TradingState,
)
from trading.domain.reasons import UNLIFTABLE_STOPS, DrawdownStage, ReasonCode
from trading.domain.risk import daily_loss_pct, drawdown_stage, trading_state
from trading.domain.sizing import EquityTier, equity_tier, next_tier, tier_named

RECENT_TRADES = 50  # closed trades kept for the M-1 KPI watch and R-9 (net PnL, newest last)

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
    launch: bool = False  # the Z-5 launch preset: keep the ramp
    states: dict[str, RiskState] = field(default_factory=dict)
    paused: dict[str, set[str]] = field(default_factory=dict)
    blacklist: dict[tuple[str, str], SymbolBlacklist] = field(default_factory=dict)
    entry_logs: dict[str, EntryLog] = field(default_factory=dict)  # F-4 per bot
    next_day_ms: int = 0
    account: AccountRisk = field(default_factory=AccountRisk)
    recent_nets: deque = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))
    ramp: LaunchRamp = field(default_factory=LaunchRamp)
    _tier: EquityTier | None = None
    _closed_since_record: list = field(default_factory=list)  # trades closed, waiting for the balance

    def __post_init__(self) -> None:
        for name in self.profiles:
            self.paused.setdefault(name, set())

    # ------------------------------------------------------------ queries
    def stage(self, peak_equity: Decimal | None, equity: Decimal) -> DrawdownStage:
        """SPEC R-5 stage for ``equity`` against ``peak_equity`` (quote; None = not started):
        PAUSE while the pause is latched (until a confirmed /resume), else from the fall below
        the peak (a pause from the fall below the equity at the last resume, and the highs
        after it)."""
        if self.account.drawdown_paused:
            return DrawdownStage.PAUSE
        if peak_equity is None:
            return DrawdownStage.NONE
        rules = self.account_rules
        return drawdown_stage(peak_equity, equity, reduce_pct=rules.drawdown_reduce_pct,
                              reduce_quote=rules.drawdown_reduce_quote, pause_pct=rules.drawdown_pause_pct,
                              pause_quote=rules.drawdown_pause_quote, pause_from=self.account.pause_anchor)

    def tier(self, equity: Decimal) -> EquityTier:
        """The Z-4 tier in force (R-9 hysteresis); before the first observation, the plain tier
        of ``equity`` (quote)."""
        return self._tier or equity_tier(equity)

    def losing(self, peak_equity: Decimal | None, equity: Decimal) -> bool:
        """SPEC R-9: True during a losing streak or while ``equity`` is below its peak (quote)."""
        return self.account.loss_streak > 0 or (peak_equity is not None and equity < peak_equity)

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

    # ------------------------------------------------ account-level state
    def restore_account(self, state: AccountRisk | None, record: list[tuple[Decimal, Decimal]] = ()) -> None:
        """Load the saved account risk state and rebuild the recent trades and the launch ramp
        from the trade record ((net PnL, equity after) per closed trade, oldest first, SPEC
        Z-5) without announcing anything."""
        if state is not None:
            self.account = state
            self._tier = tier_named(state.tier)
        self.ramp = LaunchRamp().replay(record) if self.launch else LaunchRamp()
        self.recent_nets.clear()
        self.recent_nets.extend(net for net, _ in record[-RECENT_TRADES:])

    def set_account(self, state: AccountRisk) -> None:
        """Store and emit the account risk state (persisted, SPEC R-5, R-9)."""
        if state != self.account:
            self.account = state
            self.sink.emit(AccountRiskChanged(state))

    def observe(self, now: int, equity: Decimal, peak_equity: Decimal | None) -> EquityTier:
        """Watch the account's equity (quote) at ``now``: latch the R-5 pause when the drawdown
        reaches it, move the pause anchor up with new highs (dropped at the peak), and move the
        Z-4 tier with R-9 hysteresis — every step audited and announced. Returns the tier."""
        rules = self.account_rules
        state = self.account
        if equity <= 0:
            return self.tier(equity)
        anchor = state.pause_anchor
        if anchor is not None:
            anchor = None if peak_equity is None or equity >= peak_equity else max(anchor, equity)
            if anchor != state.pause_anchor:
                state = replace(state, pause_anchor=anchor)
        if not state.drawdown_paused and peak_equity is not None:
            stage = drawdown_stage(peak_equity, equity, reduce_pct=rules.drawdown_reduce_pct,
                                   reduce_quote=rules.drawdown_reduce_quote, pause_pct=rules.drawdown_pause_pct,
                                   pause_quote=rules.drawdown_pause_quote, pause_from=anchor)
            if stage is DrawdownStage.PAUSE:
                state = replace(state, drawdown_paused=True)
                base = peak_equity if anchor is None else anchor
                self.sink.emit(RiskNotice(now, "DRAWDOWN_PAUSED",
                                          f"Drawdown pause (R-5): equity {equity:.2f} is {base - equity:.2f} below "
                                          f"{'the peak' if anchor is None else 'the equity at the last resume'} "
                                          f"{base:.2f}. Every entry is paused until you confirm /resume.",
                                          {"equity": equity, "peak_equity": peak_equity, "from": base}))
        tier = next_tier(self._tier, equity, rules.tier_hysteresis_pct)
        if tier is not self._tier:
            old = self._tier
            self._tier = tier
            state = replace(state, tier=tier.name, tier_history=(*state.tier_history, (now, tier.name)))
            if old is not None:
                up = tier.min_equity > old.min_equity
                self.sink.emit(RiskNotice(now, "TIER_CHANGED",
                                          f"Equity tier {old.name} → {tier.name} ({'up' if up else 'down'}, equity "
                                          f"{equity:.2f}; Z-4, R-9 hysteresis {rules.tier_hysteresis_pct} %)",
                                          {"from": old.name, "to": tier.name, "equity": equity}))
        self.set_account(state)
        return tier

    def resume_drawdown(self, now: int, equity: Decimal) -> bool:
        """Lift the latched R-5 pause (a confirmed /resume, T-1); a new pause is then measured
        from ``equity`` (quote) and the highs after it. True when a pause was lifted."""
        if not self.account.drawdown_paused:
            return False
        self.set_account(replace(self.account, drawdown_paused=False, pause_anchor=equity))
        self.sink.emit(RiskNotice(now, "DRAWDOWN_RESUMED",
                                  f"Drawdown pause lifted by a confirmed /resume at equity {equity:.2f} (R-5).",
                                  {"equity": equity}))
        return True

    def applied(self, bot: str, risk_pct: Decimal, leverage: int) -> None:
        """SPEC R-9: remember the risk % and leverage an entry of ``bot`` was sent with (the
        ceiling while equity is below its peak or a losing streak runs)."""
        if self.account.ceiling(bot) != (risk_pct, leverage):
            self.set_account(self.account.with_ceiling(bot, risk_pct, leverage))

    def hard_stop(self, now: int, day: str, loss_pct: Decimal) -> None:
        """SPEC R-3 hard limit: every bot halted (DAILY_LOSS_HARD_LIMIT, not liftable) to the
        next UTC day; recorded once per day."""
        for name in self.profiles:
            state = self.states.get(name)
            if state is not None and state.halted_reason != ReasonCode.DAILY_LOSS_HARD_LIMIT:
                self.set_state(replace(state, halted_reason=ReasonCode.DAILY_LOSS_HARD_LIMIT))
        self.set_account(replace(self.account, hard_stop_day=day))
        limit = self.account_rules.daily_loss_hard_limit_pct
        self.sink.emit(RiskNotice(now, "DAILY_HARD_LIMIT",
                                  f"Daily loss {loss_pct:.2f} % reached the hard limit {limit} % (R-3): every "
                                  f"position is closed at market and the account is halted until 00:00 UTC.",
                                  {"loss_pct": loss_pct, "limit_pct": limit, "day": day}))

    def record_closed(self, closed: Position) -> None:
        """A trade closed: the R-9 losing streak and the recent record move; the launch ramp
        books it once the balance after it is known (:meth:`record_balance`)."""
        net = closed.net_pnl
        self.recent_nets.append(net)
        streak = self.account.loss_streak + 1 if net < 0 else 0
        if streak != self.account.loss_streak:
            self.set_account(replace(self.account, loss_streak=streak))
        if self.launch:
            self._closed_since_record.append(closed)

    def record_balance(self, now: int, balance: Decimal) -> None:
        """SPEC Z-5: book the trades closed since the last call in the launch ramp with the
        wallet balance (quote) after them; a stage change is audited and announced."""
        if not self._closed_since_record:
            return
        closed, self._closed_since_record = self._closed_since_record, []
        after = balance - sum((c.net_pnl for c in closed[1:]), ZERO)
        for i, trade in enumerate(closed):
            if i:
                after += trade.net_pnl
            change = self.ramp.record(trade.net_pnl, after)
            if change is not None:
                stage = self.ramp.current
                verb = "promoted to" if change.promoted else "stepped back to"
                self.sink.emit(RiskNotice(
                    now, "LAUNCH_STAGE_CHANGED",
                    f"Launch ramp {verb} stage {change.new}/6 (Z-5): {change.why}. Now {stage.max_positions} "
                    f"position(s) at {stage.risk_pct} % risk, leverage up to {stage.leverage}×.",
                    {"from": change.old, "to": change.new, "trade": change.trade, "reason": change.why,
                     "risk_pct": stage.risk_pct, "leverage": stage.leverage,
                     "max_positions": stage.max_positions}))

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
        it had ('' if none, or when it is the R-3 hard limit, which holds to the next UTC day)."""
        state = self.states.get(bot)
        if state is None or not state.halted_reason or state.halted_reason in UNLIFTABLE_STOPS:
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
        stop-loss also counts towards the symbol blacklist (R-6). The R-9 losing streak and the
        Z-5 record follow (:meth:`record_closed`)."""
        self.record_closed(closed)
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
