"""Domain events → notification texts (SPEC T-4), as aiogram ``formatting`` nodes (escaped).

:class:`NoticeBuilder` remembers the last version of every open position and each bot's halt
reason, so it can tell an entry from a TP1 fill, a stepwise step, a scaling addition or an exit,
and a new risk stop from a repeated snapshot. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import Enum, IntEnum

from aiogram.utils.formatting import Bold, Text

from bot.render import money, plain
from trading.domain.events import Alert, Event, OrderUpdated, PositionChanged, RiskNotice, RiskStateChanged
from trading.domain.models import ExitReason, OrderStatus, Position, RiskState


class Priority(IntEnum):
    """Queue priority: lower goes first (SPEC T-4)."""

    CRITICAL = 0
    NORMAL = 1
    LOW = 2


class Category(str, Enum):
    """Notification categories; each can be set on / silent / off (critical ones never off)."""

    STOP_LOSS = "stop_loss"  # SL and no-stop closes
    RISK = "risk"  # risk stops (R-2, R-3 halts)
    ALERT = "alert"  # monitor and engine alerts (M-1)
    LIFECYCLE = "lifecycle"  # shutdown, crash, build card
    ENTRY = "entry"
    TAKE_PROFIT = "take_profit"  # TP1, TP2, TP3, stepwise steps
    EXIT = "exit"  # AutoProfit, Timeout, max hold, manual and other closes
    SCALING = "scaling"  # E-10 ladder additions
    ORDER = "order"  # exchange rejections
    REPORT = "report"  # daily report, CSV
    DIGEST = "digest"  # low-priority bits (funding payments...), merged


PRIORITY: dict[Category, Priority] = {
    Category.STOP_LOSS: Priority.CRITICAL,
    Category.RISK: Priority.CRITICAL,
    Category.ALERT: Priority.CRITICAL,
    Category.LIFECYCLE: Priority.CRITICAL,
    Category.ENTRY: Priority.NORMAL,
    Category.TAKE_PROFIT: Priority.NORMAL,
    Category.EXIT: Priority.NORMAL,
    Category.SCALING: Priority.NORMAL,
    Category.ORDER: Priority.NORMAL,
    Category.REPORT: Priority.NORMAL,
    Category.DIGEST: Priority.LOW,
}

CRITICAL_CATEGORIES = frozenset(c for c, p in PRIORITY.items() if p is Priority.CRITICAL)

_EXIT_TITLES = {
    ExitReason.STOP_LOSS: "🛑 Stop-loss",
    ExitReason.NO_STOP: "🛑 Closed: no working stop (R-10)",
    ExitReason.DAILY_LOSS: "⛔ Closed: daily hard loss limit (R-3)",
    ExitReason.TP1: "✅ TP1",
    ExitReason.TP2: "✅ TP2",
    ExitReason.TP3: "✅ TP3",
    ExitReason.STEP_TP: "✅ Stepwise take-profit",
    ExitReason.AUTO_PROFIT: "💰 AutoProfit",
    ExitReason.TIMEOUT: "⏱ Timeout",
    ExitReason.MAX_HOLD: "⏱ Max hold",
    ExitReason.MANUAL: "✋ Manual close",
    ExitReason.END_OF_DATA: "⏹ Closed at end of data",
}


def exit_category(reason: ExitReason | None) -> Category:
    """The category of a close: stop-losses are critical, take-profits and the rest normal."""
    if reason in (ExitReason.STOP_LOSS, ExitReason.NO_STOP, ExitReason.DAILY_LOSS):
        return Category.STOP_LOSS
    if reason in (ExitReason.TP1, ExitReason.TP2, ExitReason.TP3, ExitReason.STEP_TP):
        return Category.TAKE_PROFIT
    return Category.EXIT


# Account-level risk steps (RiskNotice actions, SPEC, Z-5, S-7) → their title.
RISK_NOTICE_TITLES = {
    "TIER_CHANGED": "📶 Equity tier changed",
    "LAUNCH_STAGE_CHANGED": "🚀 Launch stage",
    "DRAWDOWN_PAUSED": "⛔ Drawdown pause",
    "DRAWDOWN_RESUMED": "▶️ Drawdown pause lifted",
    "DAILY_HARD_LIMIT": "⛔ Daily hard loss limit",
    "PROMOTION_GATE_SKIPPED": "⚠️ Promotion gate skipped",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to send: its category and text; ``playbook`` the incident playbook
    whose button goes with it (an engine alert's, SPEC T-6; "" = none)."""

    category: Category
    text: Text
    key: tuple[str, str] | None = None
    """(bot, symbol) of the position it is about, (bot, "*") for a bot's risk stop, None for
    the rest: the notifier keeps one key's messages in event order (SPEC T-4)."""
    playbook: str = ""
    """the incident playbook whose button goes with it (an engine alert's, SPEC T-6; "" = none)."""

    @property
    def priority(self) -> Priority:
        """Queue priority of the category."""
        return PRIORITY[self.category]


class NoticeBuilder:
    """Turns persisted domain events into :class:`Notice` objects (SPEC T-4).

    Args:
        quote: settlement currency shown with money (e.g. ``USDT``).
    """

    def __init__(self, quote: str = "USDT") -> None:
        self.quote = quote
        self._positions: dict[str, Position] = {}
        self._halted: dict[str, str] = {}
        self._closed: set[str] = set()  # positions whose close was announced

    def prime(self, positions: Iterable[Position], risk_states: Iterable[RiskState] = ()) -> None:
        """Remember state restored from the database, so a restart does not announce open
        positions as new entries or an old risk stop again."""
        for position in positions:
            if position.is_open:
                self._positions[position.position_id] = position
        for state in risk_states:
            self._halted[state.bot] = state.halted_reason

    def build(self, events: Iterable[Event]) -> list[Notice]:
        """Notices for ``events`` in order (events that say nothing new give none)."""
        notices: list[Notice] = []
        for event in events:
            if isinstance(event, PositionChanged):
                notices.extend(self._position(event.position, event.liquidation))
            elif isinstance(event, RiskStateChanged):
                notice = self._risk(event.state)
                if notice is not None:
                    notices.append(notice)
            elif isinstance(event, RiskNotice):
                title = RISK_NOTICE_TITLES.get(event.action, event.action)
                notices.append(Notice(Category.RISK, Text(Bold(title), "\n", event.text)))
            elif isinstance(event, Alert):
                notices.append(Notice(Category.ALERT, Text(
                    "⚠️ ", Bold(event.kind), f" {event.bot} {event.symbol}".rstrip(), "\n", event.text,
                ), (event.bot, event.symbol) if event.bot and event.symbol else None, event.playbook))
            elif isinstance(event, OrderUpdated) and event.order.status is OrderStatus.REJECTED:
                o = event.order
                notices.append(Notice(Category.ORDER, Text(
                    "❗ ", Bold("Order rejected"), f" {o.symbol} {o.leg.value} {o.side.value} {plain(o.amount)}",
                    f" ({o.bot})\n", "Reason: ", o.reason or "not given",
                ), (o.bot, o.symbol)))
        return notices

    def _position(self, p: Position, liquidation: Decimal | None = None) -> list[Notice]:
        return [replace(n, key=(p.bot, p.symbol)) for n in self._position_notices(p, liquidation)]

    def _position_notices(self, p: Position, liquidation: Decimal | None = None) -> list[Notice]:
        prev = self._positions.get(p.position_id)
        head = f" {p.side.value.upper()} {p.symbol} ({p.bot})"
        out: list[Notice] = []
        if prev is None and p.is_open:
            self._positions[p.position_id] = p
            if p.additions == 0 and not p.tp1_done and p.steps_done == 0:
                out.append(Notice(Category.ENTRY, Text(
                    "🟢 ", Bold("Entry"), head, "\n",
                    f"Contracts {plain(p.contracts)} @ {plain(p.entry_price)} · leverage {p.leverage}×\n",
                    f"SL {plain(p.stop_loss)} · TP1 {plain(p.take_profit_1)} · TP2 {plain(p.take_profit_2)}",
                    *([f"\nLiquidation ≈ {liquidation:.6g} ({abs(p.entry_price - liquidation) / p.entry_price * 100:.2f} % "
                       "from the entry)"] if liquidation is not None and p.entry_price > 0 else []),
                )))
            return out
        if prev is not None:
            if p.tp1_done and not prev.tp1_done:
                out.append(Notice(Category.TAKE_PROFIT, Text(
                    "✅ ", Bold("TP1"), head, "\n",
                    f"Contracts left {plain(p.contracts)} · stop now {plain(p.stop_loss)}",
                )))
            if p.steps_done > prev.steps_done:
                out.append(Notice(Category.TAKE_PROFIT, Text(
                    "✅ ", Bold(f"Step {p.steps_done}"), head, "\n",
                    f"Contracts left {plain(p.contracts)} · stop now {plain(p.stop_loss)}",
                )))
            if p.additions > prev.additions:
                out.append(Notice(Category.SCALING, Text(
                    "➕ ", Bold(f"Scaling addition {p.additions}"), head, "\n",
                    f"Contracts {plain(p.contracts)} @ average {plain(p.entry_price)} · SL {plain(p.stop_loss)}",
                )))
            if p.funding != prev.funding and p.is_open:
                out.append(Notice(Category.DIGEST, Text(
                    f"Funding {p.symbol} ({p.bot}): {money(p.funding - prev.funding, self.quote, signed=True)}",
                )))
        if p.is_open:
            self._positions[p.position_id] = p
            return out
        if prev is None and p.position_id in self._closed:
            return out
        self._positions.pop(p.position_id, None)
        self._closed.add(p.position_id)
        title = _EXIT_TITLES.get(p.exit_reason, "Closed") if p.exit_reason else "Closed"
        exit_price = plain(p.exit_price) if p.exit_price is not None else "?"
        out.append(Notice(exit_category(p.exit_reason), Text(
            Bold(title), head, "\n",
            f"Entry {plain(p.entry_price)} → exit {exit_price}\n",
            f"Net PnL {money(p.net_pnl, self.quote, signed=True)}",
        )))
        return out

    def _risk(self, state: RiskState) -> Notice | None:
        before = self._halted.get(state.bot, "")
        self._halted[state.bot] = state.halted_reason
        if not state.halted_reason or state.halted_reason == before:
            return None
        return Notice(Category.RISK, Text(
            "⛔ ", Bold("Risk stop"), f" {state.bot}: {state.halted_reason}\n",
            f"No new entries until the next UTC day ({state.day} closed for entries). "
            f"Realised today {money(state.realised_today, self.quote, signed=True)}, SL streak {state.sl_streak}.",
        ), (state.bot, "*"))
