"""Domain models of the trading core.

Frozen dataclasses; money, prices and quantities are ``Decimal`` (quote currency, contracts),
time is epoch milliseconds UTC. Floats appear only in :class:`Candle` (indicator input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import NamedTuple

from trading.domain.reasons import ReasonCode

ZERO = Decimal(0)

# Candle timeframes OptiFlow trades (SPEC S-5) and their length in epoch ms.
TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}


class Side(str, Enum):
    """Direction of a position."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        """+1 for long, −1 for short: PnL = sign × (exit − entry) × contracts × contractSize."""
        return 1 if self is Side.LONG else -1

    @property
    def entry_order_side(self) -> "OrderSide":
        """The order side that opens this position."""
        return OrderSide.BUY if self is Side.LONG else OrderSide.SELL

    @property
    def exit_order_side(self) -> "OrderSide":
        """The order side that reduces this position (reduce-only brackets)."""
        return OrderSide.SELL if self is Side.LONG else OrderSide.BUY


class OrderSide(str, Enum):
    """Exchange order side (ccxt ``side``)."""

    BUY = "buy"
    SELL = "sell"


class OrderType(str, Enum):
    """Order types we place (SPEC O-3)."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"  # a limit entry (SPEC O-3 entry_order_style "limit"), at ``Order.price``
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    TAKE_PROFIT = "TAKE_PROFIT"  # a limit order at the trigger price once triggered (tp_order_style "limit")


class OrderStatus(str, Enum):
    """Order life cycle, as ccxt names it."""

    OPEN = "open"
    CLOSED = "closed"  # filled
    CANCELED = "canceled"
    REJECTED = "rejected"


class OrderLeg(str, Enum):
    """Why an order exists; part of the client order id (SPEC O-2)."""

    ENTRY = "entry"
    STOP_LOSS = "sl"
    TP1 = "tp1"
    TP2 = "tp2"
    TP3 = "tp3"  # E-1 ATR mode
    ADD = "add"  # E-10 scaling-ladder addition
    CLOSE = "close"  # manual, risk or exit-policy close at market


class ExitReason(str, Enum):
    """Why a position (or part of it) was closed (SPEC E-1)."""

    STOP_LOSS = "SL"
    TP1 = "TP1"
    TP2 = "TP2"
    TP3 = "TP3"
    STEP_TP = "STEP_TP"  # E-2 stepwise take-profit closed the last share
    AUTO_PROFIT = "AUTO_PROFIT"  # E-3
    TIMEOUT = "TIMEOUT"  # E-4
    MAX_HOLD = "MAX_HOLD"  # E-4 swing profiles
    NO_STOP = "NO_STOP"  # no working exchange stop, closed at once
    DAILY_LOSS = "DAILY_LOSS"  # the hard daily loss limit closed every position
    MANUAL = "MANUAL"
    END_OF_DATA = "END_OF_DATA"


class TradingState(str, Enum):
    """RiskGuard trading state (STYLE: nautilus): HALTED still lets cancels and closes through."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class Candle(NamedTuple):
    """One OHLCV candle: ``timestamp`` = open time (epoch ms UTC); prices in quote; volume in
    contracts (base units, contractSize 1 on Binance USDⓈ-M)."""

    timestamp: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Market:
    """Exchange rules of one contract, from ccxt ``load_markets()`` (SPEC O-1, S-3).

    tick_size / step_size: price and quantity increments; min_qty in contracts; min_notional in
    quote; contract_size in base units per contract; maker_fee / taker_fee as fractions (0.0005 =
    0.05 %).
    """

    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    contract_size: Decimal
    maker_fee: Decimal
    taker_fee: Decimal


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the exchange port knows it.

    amount in contracts; trigger_price (stop/take-profit trigger), price (the limit of a LIMIT
    order) and average (fill price) in quote; timestamps epoch ms UTC. ``client_order_id`` is
    deterministic (SPEC O-2). ``fee``: the commission (quote) of everything filled so far when
    the venue reports it (the simulated exchange does; None = unknown, the fill tracker then
    prices it at the market's maker / taker rate).
    """

    client_order_id: str
    bot: str
    symbol: str
    side: OrderSide
    type: OrderType
    leg: OrderLeg
    amount: Decimal
    reduce_only: bool
    created_ms: int
    status: OrderStatus = OrderStatus.OPEN
    trigger_price: Decimal | None = None
    filled: Decimal = ZERO
    average: Decimal | None = None
    updated_ms: int = 0
    reason: str = ""  # exchange rejection reason, if any
    price: Decimal | None = None  # LIMIT orders: the limit price
    fee: Decimal | None = None  # cumulative commission of the fills (quote), when the venue says


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: amount in contracts, price and fee in quote, timestamp epoch ms UTC."""

    client_order_id: str
    bot: str
    symbol: str
    side: OrderSide
    leg: OrderLeg
    amount: Decimal
    price: Decimal
    fee: Decimal
    timestamp: int


@dataclass(frozen=True, slots=True)
class Position:
    """An open (or closed) position of one bot on one symbol.

    contracts: current size; initial_contracts: size at entry; prices in quote; realised_pnl is
    the gross PnL already booked by partial closes, fees and funding are running totals in quote
    (funding > 0 = received). ``tp1_done`` is set once TP1 has filled (SPEC E-1).
    """

    position_id: str
    bot: str
    symbol: str
    side: Side
    contracts: Decimal
    initial_contracts: Decimal
    entry_price: Decimal
    opened_ms: int
    stop_loss: Decimal
    take_profit_1: Decimal
    take_profit_2: Decimal
    leverage: int
    tp1_done: bool = False
    realised_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    closed_ms: int | None = None
    exit_price: Decimal | None = None
    exit_reason: ExitReason | None = None
    take_profit_3: Decimal | None = None  # E-1 ATR mode only
    steps_done: int = 0  # E-2 stepwise take-profit steps already taken
    additions: int = 0  # E-10 ladder additions made
    last_addition_ms: int | None = None  # E-10: time of the last addition (epoch ms UTC)

    @property
    def is_open(self) -> bool:
        """True while contracts remain and no close time is set."""
        return self.closed_ms is None

    @property
    def net_pnl(self) -> Decimal:
        """Realised PnL net of fees and funding, in quote."""
        return self.realised_pnl - self.fees + self.funding

    def unrealised_pnl(self, mark_price: Decimal, contract_size: Decimal = Decimal(1)) -> Decimal:
        """Unrealised PnL in quote at ``mark_price`` for the contracts still open."""
        return self.side.sign * (mark_price - self.entry_price) * self.contracts * contract_size

    def notional(self, price: Decimal, contract_size: Decimal = Decimal(1)) -> Decimal:
        """contracts × contractSize × price, in quote (SPEC S-3)."""
        return self.contracts * contract_size * price

    def margin(self, contract_size: Decimal = Decimal(1)) -> Decimal:
        """Initial margin in quote at the entry price: notional / leverage (SPEC Z-1)."""
        return self.contracts * contract_size * self.entry_price / self.leverage


@dataclass(frozen=True, slots=True)
class TradeResult:
    """A closed position's identity and its net result: what sums of closed trades and the S-7
    demo record read, without loading the whole position.

    net_pnl: realised PnL net of fees and funding, in quote (as :attr:`Position.net_pnl`).
    """

    position_id: str
    bot: str
    symbol: str
    side: Side
    net_pnl: Decimal


@dataclass(frozen=True, slots=True)
class EquitySnapshot:
    """Balance (wallet, realised) and equity (balance + unrealised PnL) in quote at a time."""

    timestamp: int
    balance: Decimal
    equity: Decimal


@dataclass(frozen=True, slots=True)
class SignalEvaluation:
    """One evaluated entry signal (SPEC S-13): score, whether it passed, the first blocker."""

    timestamp: int
    bot: str
    symbol: str
    side: Side
    score: float
    passed: bool
    blocked_by: str = ""  # reason code of the first check that blocked it, "" when it passed
    min_score: float = 0.0  # the score the bot needed at that moment (tier or config, Z-4)
    components: tuple[str, ...] = ()  # satisfied conditions, e.g. ("rsi", "volume") (S-11)


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """Result of the RiskGuard pipeline (SPEC R-*): ``reason`` is a :class:`ReasonCode`."""

    allowed: bool
    reason: ReasonCode = ReasonCode.OK
    detail: str = ""

    @staticmethod
    def allow() -> "RiskDecision":
        """The decision that lets an entry through."""
        return RiskDecision(True)


@dataclass(frozen=True, slots=True)
class RiskState:
    """Per-bot risk counters for the current UTC day (SPEC R-2, R-3), persisted across restarts.

    day: 'YYYY-MM-DD' UTC; day_start_equity in quote; sl_streak counts consecutive stop-losses;
    halted_reason is the reason code that stopped entries for the rest of the day, "" if none.
    """

    bot: str
    day: str
    day_start_equity: Decimal
    sl_streak: int = 0
    realised_today: Decimal = ZERO
    trades_today: int = 0
    halted_reason: str = ""
    gross_profit_today: Decimal = ZERO  # Σ winning trades' net PnL today (R-4)
    gross_loss_today: Decimal = ZERO  # |Σ losing trades' net PnL| today (R-4)

    @property
    def profit_factor_today(self) -> Decimal | None:
        """Gross profit / gross loss of today's trades (None without a loss)."""
        return self.gross_profit_today / self.gross_loss_today if self.gross_loss_today > 0 else None


@dataclass(frozen=True, slots=True)
class SymbolBlacklist:
    """SPEC R-6 per bot and symbol: stop-losses counted since the last block, and the time
    (epoch ms UTC) until which the symbol takes no entries (None = not blocked)."""

    bot: str
    symbol: str
    stop_losses: int = 0
    blocked_until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """Paper/exchange account in quote: wallet balance (realised), and the peak equity seen."""

    balance: Decimal
    peak_equity: Decimal
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class AccountRisk:
    """Account-level risk state that outlives a restart (SPEC R-3, R-5, R-9, Z-4).

    drawdown_paused: the R-5 pause, latched until a confirmed /resume (T-1); pause_anchor: the
    equity (quote) at that resume — a new pause is measured from it (and from the highs after
    it), the reduce stage still from the peak; tier: the Z-4 tier in force (R-9 hysteresis) and
    tier_history its changes as (since epoch ms UTC, tier name), oldest first; loss_streak:
    losing trades in a row (R-9); ceilings: per bot the (risk %, leverage ×) last applied to an
    entry, which risk and leverage may not rise above while equity is below its peak or a losing
    streak runs (R-9); hard_stop_day: the UTC day ('YYYY-MM-DD') on which the R-3 hard limit
    closed every position ('' = none).
    """

    drawdown_paused: bool = False
    pause_anchor: Decimal | None = None
    tier: str = ""
    tier_history: tuple[tuple[int, str], ...] = ()
    loss_streak: int = 0
    ceilings: tuple[tuple[str, Decimal, int], ...] = ()
    hard_stop_day: str = ""

    def ceiling(self, bot: str) -> tuple[Decimal, int] | None:
        """(risk %, leverage) last applied to an entry of ``bot``, or None."""
        return next(((risk, lev) for name, risk, lev in self.ceilings if name == bot), None)

    def with_ceiling(self, bot: str, risk_pct: Decimal, leverage: int) -> "AccountRisk":
        """A copy with ``bot``'s ceiling set."""
        from dataclasses import replace

        rest = tuple(c for c in self.ceilings if c[0] != bot)
        return replace(self, ceilings=tuple(sorted((*rest, (bot, risk_pct, leverage)))))

    def as_dict(self) -> dict:
        """Plain JSON values (Decimals as strings) for storage."""
        return {
            "drawdown_paused": self.drawdown_paused,
            "pause_anchor": None if self.pause_anchor is None else str(self.pause_anchor),
            "tier": self.tier,
            "tier_history": [[ts, name] for ts, name in self.tier_history],
            "loss_streak": self.loss_streak,
            "ceilings": [[bot, str(risk), lev] for bot, risk, lev in self.ceilings],
            "hard_stop_day": self.hard_stop_day,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "AccountRisk":
        """Inverse of :meth:`as_dict` (missing keys take their defaults)."""
        anchor = data.get("pause_anchor")
        return cls(
            drawdown_paused=bool(data.get("drawdown_paused", False)),
            pause_anchor=None if anchor is None else Decimal(anchor),
            tier=str(data.get("tier", "")),
            tier_history=tuple((int(ts), str(name)) for ts, name in data.get("tier_history", ())),
            loss_streak=int(data.get("loss_streak", 0)),
            ceilings=tuple((str(b), Decimal(r), int(lev)) for b, r, lev in data.get("ceilings", ())),
            hard_stop_day=str(data.get("hard_stop_day", "")),
        )


@dataclass(frozen=True, slots=True)
class EntryIntent:
    """What the strategy wants: open ``side`` on ``symbol`` with this score at ``price`` (quote)."""

    bot: str
    symbol: str
    side: Side
    score: float
    price: Decimal
    timestamp: int
    components: tuple[str, ...] = field(default=())
