"""The account guard: the account-level watch that runs after every fill and at every candle
close of a held symbol — whenever equity can have moved (SPEC R-3, R-5, R-9, liquidation).

1. R-5 / R-9: the risk state observes equity (latches the drawdown pause, moves the equity tier
   with hysteresis; each step audited and announced);
2. R-3: realised + unrealised loss of the UTC day ≥ the daily limit (2 %) stops every bot's
   entries; ≥ the hard limit (3 %) also cancels the entries and additions waiting to fill,
   closes every open position at market through the engine's one close path (reduce-only, so
   the order gate lets it through) and halts the account until the next UTC day;
3. liquidation: an alert, once per position, when its mark is within ``liquidation_alert_pct``
   % of the entry → liquidation distance from the liquidation price (default 20 %).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from trading.domain.config import AccountConfig
from trading.domain.events import Alert, EventSink
from trading.domain.liquidation import (
    MarginBracket,
    bracket_for,
    distance_pct,
    isolated_liquidation_price,
    liquidation_price,
    remaining_share_pct,
)
from trading.domain.models import ZERO, ExitReason, OrderLeg, Position
from trading.domain.reasons import ReasonCode
from trading.domain.risk import daily_loss_pct
from trading.engine.book import Book
from trading.engine.gate import OrderGate
from trading.engine.protection import Protection
from trading.engine.risk_state import RiskBook, utc_day
from trading.ports import Clock

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AccountGuard:
    """Watches the account (see the module doc).

    Args: book, risk, gate (cancels), protection (closes at market), sink, clock, rules (the
    account config: limits, margin mode, alert distance), brackets (maintenance-margin brackets
    per symbol; a symbol without them has no computed liquidation price).
    """

    book: Book
    risk: RiskBook
    gate: OrderGate
    protection: Protection
    sink: EventSink
    clock: Clock
    rules: AccountConfig
    brackets: Mapping[str, Sequence[MarginBracket]] = field(default_factory=dict)
    _near_liquidation: set[str] = field(default_factory=set)  # position ids alerted (once each)

    # ------------------------------------------------------------- the watch
    async def watch(self) -> None:
        """One pass: equity stages and tier, the day's loss limits, liquidation distances."""
        book = self.book
        account = book.account
        if account is None:
            return
        now = self.clock.now_ms()
        equity = book.equity()
        book.update_tier(self.risk.observe(now, equity, account.peak_equity), equity)
        await self.daily_loss(now)
        self.liquidation_watch(now)

    def day_loss_pct(self) -> Decimal:
        """Realised + unrealised loss of the UTC day in % of day-start equity (0 in profit)."""
        states = self.risk.states
        if not states:
            return ZERO
        day_start = next(iter(states.values())).day_start_equity
        return daily_loss_pct(self.risk.realised_today() + self.book.unrealised_pnl(), day_start)

    async def daily_loss(self, now: int) -> None:
        """SPEC R-3: stop entries at the daily limit; at the hard limit close everything and
        halt the account to the next UTC day (closes sent again while a position is left)."""
        loss = self.day_loss_pct()
        day = utc_day(now)
        hard = self.risk.account.hard_stop_day == day
        if not hard and loss >= self.rules.daily_loss_hard_limit_pct:
            self.risk.hard_stop(now, day, loss)
            hard = True
        elif loss >= self.rules.daily_loss_limit_pct:
            for bot in self.risk.profiles:
                self.risk.halt(bot, ReasonCode.DAILY_LOSS_LIMIT)
        if hard:
            await self.flatten()

    async def flatten(self) -> None:
        """Cancel the entries and additions waiting to fill, then close every position at
        market that has no close on its way (R-3 hard limit)."""
        book = self.book
        for key, pending in list(book.pending.items()):
            del book.pending[key]
            await self.gate.cancel(pending.order)
        for order in [o for o in book.open_orders.values() if o.leg is OrderLeg.ADD]:
            await self.gate.cancel(order)
        for position in list(book.positions.values()):
            if not book.close_in_flight(position.bot, position.symbol):
                await self.protection.close_at_market(position, ExitReason.DAILY_LOSS)

    # ---------------------------------------------------------- liquidation
    def liquidation_of(self, position: Position) -> Decimal | None:
        """The position's liquidation price (quote) from the maintenance-margin brackets:
        isolated (its initial margin backs it) or cross (the wallet and the other positions);
        None when the symbol's brackets are unknown or it cannot be liquidated."""
        brackets = self.brackets.get(position.symbol)
        market = self.book.markets.get(position.symbol)
        if not brackets or market is None:
            return None
        if self.rules.margin_mode == "isolated":
            return isolated_liquidation_price(side=position.side, contracts=position.contracts,
                                              entry_price=position.entry_price, contract_size=market.contract_size,
                                              leverage=position.leverage, brackets=brackets)
        others_mm = others_upnl = ZERO
        for other in self.book.positions.values():
            if other is position or other.symbol == position.symbol:
                continue
            other_market = self.book.markets[other.symbol]
            other_brackets = self.brackets.get(other.symbol)
            notional = other.contracts * other_market.contract_size * other.entry_price
            if other_brackets:
                bracket = bracket_for(other_brackets, notional)
                others_mm += notional * bracket.maintenance_rate - bracket.cum
            mark = self.book.mark_price(other.symbol)
            if mark is not None:
                others_upnl += other.unrealised_pnl(mark, other_market.contract_size)
        assert self.book.account is not None
        return liquidation_price(side=position.side, contracts=position.contracts, entry_price=position.entry_price,
                                 contract_size=market.contract_size, wallet_balance=self.book.account.balance,
                                 brackets=brackets, other_maintenance=others_mm, other_unrealised=others_upnl)

    def liquidation_watch(self, now: int) -> None:
        """Alert once per position when its mark is within ``liquidation_alert_pct`` % of the
        entry → liquidation distance from the liquidation price."""
        open_ids = set()
        for position in self.book.positions.values():
            open_ids.add(position.position_id)
            if position.position_id in self._near_liquidation:
                continue
            mark = self.book.mark_price(position.symbol)
            liquidation = self.liquidation_of(position)
            if mark is None or liquidation is None:
                continue
            left = remaining_share_pct(position.entry_price, mark, liquidation, position.side)
            if left <= self.rules.liquidation_alert_pct:
                self._near_liquidation.add(position.position_id)
                self.sink.emit(Alert(
                    "NEAR_LIQUIDATION", position.bot, position.symbol,
                    f"{position.symbol} {position.side.value}: mark {mark} is {distance_pct(mark, liquidation):.2f} % "
                    f"from the liquidation price {liquidation:.6g} ({left:.0f} % of the entry → liquidation "
                    f"distance left; alert at {self.rules.liquidation_alert_pct} %)", "no_stop"))
        self._near_liquidation &= open_ids
