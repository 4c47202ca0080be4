"""Domain events the engine emits. It does not know who listens (storage, notifier, tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from trading.domain.models import (
    Account,
    AccountRisk,
    EquitySnapshot,
    Fill,
    Order,
    Position,
    RiskState,
    SignalEvaluation,
    SymbolBlacklist,
)
from trading.domain.reasons import ReasonCode


@dataclass(frozen=True, slots=True)
class OrderUpdated:
    """An order was placed, filled, cancelled or rejected."""

    order: Order


@dataclass(frozen=True, slots=True)
class FillBooked:
    """An execution happened."""

    fill: Fill


@dataclass(frozen=True, slots=True)
class PositionChanged:
    """A position opened, was reduced (TP1) or closed (``position.is_open`` tells).
    ``liquidation``: its liquidation price (quote) when the engine knows it (set on the
    opening event, for the entry message)."""

    position: Position
    liquidation: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AccountChanged:
    """Wallet balance or peak equity changed."""

    account: Account


@dataclass(frozen=True, slots=True)
class EquitySampled:
    """Periodic equity sample for the equity curve."""

    snapshot: EquitySnapshot


@dataclass(frozen=True, slots=True)
class SignalEvaluated:
    """An evaluated entry signal (SPEC S-13)."""

    evaluation: SignalEvaluation


@dataclass(frozen=True, slots=True)
class SignalsBelowMinimum:
    """Candidates scoring under every minimum score, recorded in bulk by a replay (SPEC S-13):
    each a SCORE_BELOW_MIN evaluation, oldest first. Stored like :class:`SignalEvaluated` ones;
    not audited (no signal under its minimum score is, unless asked)."""

    evaluations: tuple[SignalEvaluation, ...]


@dataclass(frozen=True, slots=True)
class RiskStateChanged:
    """A bot's daily risk counters changed (SPEC R-2, R-3)."""

    state: RiskState


@dataclass(frozen=True, slots=True)
class BlacklistChanged:
    """A symbol's stop-loss count or block changed (SPEC R-6)."""

    entry: SymbolBlacklist


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a trader must hear about now (SPEC T-4, M-1): kind is an UPPER_SNAKE code;
    ``playbook`` the key of the incident playbook to open (SPEC T-6, "" = none)."""

    kind: str
    bot: str
    symbol: str
    text: str
    playbook: str = ""


@dataclass(frozen=True, slots=True)
class ExitDecided:
    """The engine decided to take a position (or part of it) off, or a bracket did (SPEC A-1,
    E-1..E-5, R-10): ``reason`` is the ExitReason value (TP1, SL, STEP_TP, AUTO_PROFIT,
    TIMEOUT…); ``contracts`` the size to close; ``client_order_id`` of the close order ("" for
    a bracket that filled); ``why`` extra figures (PnL % on margin, step…). ``ts`` epoch ms UTC."""

    ts: int
    bot: str
    symbol: str
    side: str
    position_id: str
    reason: str
    contracts: Decimal
    client_order_id: str = ""
    why: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EntryDecided:
    """An entry order was accepted; the figures its brackets will use at the fill (SPEC E-1,
    Z-4): ``tp1_share_pct`` (%), ``atr`` (quote, None when unknown) and ``leverage`` (×). They
    go into the RISK_ALLOWED audit record, so a restart before the fill resumes exactly (L-3)."""

    client_order_id: str
    tp1_share_pct: Decimal
    atr: Decimal | None
    leverage: int


@dataclass(frozen=True, slots=True)
class CommandIssued:
    """A manual command from the chat or the CLI changed trading state (SPEC A-1): ``command``
    e.g. "pause", "resume"; ``source`` "chat"; ``ts`` epoch ms UTC."""

    ts: int
    command: str
    bot: str = ""
    symbol: str = ""
    source: str = "chat"
    why: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReconcileReported:
    """A reconciliation with the exchange (SPEC O-5, L-3): the one at start, or a periodic live
    one that repaired something; what was found and what was repaired, as plain JSON values
    (``trading.app.reconcile.ReconcileReport.as_dict``). ``ts`` epoch ms UTC."""

    ts: int
    report: dict


@dataclass(frozen=True, slots=True)
class OrderRefused:
    """The order gate refused an order that adds exposure before it reached the venue (SPEC
    O-9, R-*): ``reason`` the :class:`~trading.domain.reasons.ReasonCode`, ``detail`` the
    figures (``margin 80.00 > cap 75.00``); ``ts`` epoch ms UTC."""

    ts: int
    order: Order
    reason: ReasonCode
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AccountRiskChanged:
    """The account-level risk state changed (SPEC R-3, R-5, R-9): persisted with the trading state."""

    state: AccountRisk


@dataclass(frozen=True, slots=True)
class RiskNotice:
    """An account-level risk step a trader must hear about and the audit must hold (SPEC R-3,
    R-5, R-9, Z-5, S-7): ``action`` the UPPER_SNAKE audit action (TIER_CHANGED,
    LAUNCH_STAGE_CHANGED, DRAWDOWN_PAUSED, DRAWDOWN_RESUMED, DAILY_HARD_LIMIT…), ``text`` the
    message, ``why`` the figures (plain values); ``ts`` epoch ms UTC."""

    ts: int
    action: str
    text: str
    why: dict = field(default_factory=dict)
    bot: str = ""
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """The replay has processed every candle that opened before ``cursor_ms`` (epoch ms UTC)."""

    cursor_ms: int


Event = (
    OrderUpdated
    | FillBooked
    | PositionChanged
    | AccountChanged
    | EquitySampled
    | SignalEvaluated
    | SignalsBelowMinimum
    | RiskStateChanged
    | BlacklistChanged
    | Alert
    | ExitDecided
    | EntryDecided
    | CommandIssued
    | ReconcileReported
    | OrderRefused
    | AccountRiskChanged
    | RiskNotice
    | ReplayProgress
)

# Events whose loss on a crash would lose trading state: written before the next step.
CRITICAL_EVENTS = (OrderUpdated, FillBooked, PositionChanged, AccountChanged, RiskStateChanged, BlacklistChanged,
                   AccountRiskChanged)
_CRITICAL_TYPES = frozenset(CRITICAL_EVENTS)  # the event classes are final (frozen dataclasses)


class EventSink(Protocol):
    """Receives events synchronously; must be cheap (buffer, then persist asynchronously)."""

    def emit(self, event: Event) -> None:
        """Take one event."""


class EventBuffer:
    """An :class:`EventSink` that buffers events; ``critical`` tells whether state-bearing
    events wait to be persisted. Listeners call :meth:`drain`."""

    __slots__ = ("events", "critical")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.critical = False

    def emit(self, event: Event) -> None:
        """Buffer one event."""
        self.events.append(event)
        if type(event) in _CRITICAL_TYPES:  # exact types: a set lookup, not a chain of isinstance
            self.critical = True

    def drain(self) -> list[Event]:
        """Return and forget the buffered events, oldest first."""
        events, self.events, self.critical = self.events, [], False
        return events
