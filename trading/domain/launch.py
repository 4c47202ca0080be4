"""The launch ramp (SPEC Z-5; seed 003 §4, the $400 safe-launch plan): the opt-in ``launch``
preset starts small and earns each step from its own trade record.

| stage | reached when (from the stage before)                  | risk  | leverage | positions |
|-------|-------------------------------------------------------|-------|----------|-----------|
| 1     | the start                                             | 0.5 % | 5×       | 1         |
| 2     | 10 winning trades at stage 1                          | 0.5 % | 5×       | 2         |
| 3     | ≥ 50 trades and profit factor > 1.3 over the last 50  | 0.75 %| 5×       | 2         |
| 4     | equity > 500                                          | 0.75 %| 5×       | 3         |
| 5     | equity > 600                                          | 0.75 %| 7×       | 3         |
| 6     | profit factor > 1.5 over the last 50 trades           | 1 %   | 7×       | 3         |

Stage 3 is seed 003's "full parameters" (0.75 %, 5×, 2 positions); 4–6 its later steps, in its
order. Steps back: a profit factor < 1.0 over the last 20 trades steps back one stage (one step
per bad run: the next step back needs 20 trades after this one); equity at or below a stage's
equity condition (500, 600) takes the ramp back to the stage below it at once. A promotion needs
10 trades at the current stage (stage 1: its 10 wins) and no bad run, so the ramp cannot flip
back and forth on one trade. One change per trade; evaluated after every closed trade with the
equity after it.

The stage is a pure function of the trade record (net PnL of each closed trade, oldest first,
and the equity after it): :class:`LaunchRamp` walks it trade by trade, so a restart rebuilds the
same stage from SQLite.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)

WINS_FOR_STAGE_2 = 10
FULL_AFTER_TRADES = 50
FULL_PROFIT_FACTOR = Decimal("1.3")
EQUITY_FOR_3_POSITIONS = Decimal(500)
EQUITY_FOR_7X = Decimal(600)
RISK_1PCT_PROFIT_FACTOR = Decimal("1.5")
PROFIT_FACTOR_WINDOW = 50
STEP_BACK_WINDOW = 20
STEP_BACK_PROFIT_FACTOR = Decimal("1.0")
MIN_TRADES_AT_STAGE = 10


@dataclass(frozen=True, slots=True)
class LaunchStage:
    """One stage: risk per trade in % of equity, leverage ×, max open positions, and what
    reaches it."""

    number: int
    risk_pct: Decimal
    leverage: int
    max_positions: int
    unlock: str


LAUNCH_STAGES: tuple[LaunchStage, ...] = (
    LaunchStage(1, Decimal("0.5"), 5, 1, "the start"),
    LaunchStage(2, Decimal("0.5"), 5, 2, f"{WINS_FOR_STAGE_2} winning trades"),
    LaunchStage(3, Decimal("0.75"), 5, 2, f"{FULL_AFTER_TRADES} trades with profit factor > {FULL_PROFIT_FACTOR}"),
    LaunchStage(4, Decimal("0.75"), 5, 3, f"equity > {EQUITY_FOR_3_POSITIONS}"),
    LaunchStage(5, Decimal("0.75"), 7, 3, f"equity > {EQUITY_FOR_7X}"),
    LaunchStage(6, Decimal("1.0"), 7, 3,
                f"profit factor > {RISK_1PCT_PROFIT_FACTOR} over the last {PROFIT_FACTOR_WINDOW} trades"),
)


def stage(number: int) -> LaunchStage:
    """The stage numbered ``number`` (1–6). Raises IndexError otherwise."""
    if not 1 <= number <= len(LAUNCH_STAGES):
        raise IndexError(f"launch stage {number} does not exist (1–{len(LAUNCH_STAGES)})")
    return LAUNCH_STAGES[number - 1]


def profit_factor(nets: Iterable[Decimal]) -> Decimal | None:
    """Σ winning / |Σ losing| net PnL; None without trades; a large sentinel (10⁹) with wins and
    no loss; 0 with neither."""
    gross_profit = gross_loss = ZERO
    count = 0
    for net in nets:
        count += 1
        if net > 0:
            gross_profit += net
        elif net < 0:
            gross_loss -= net
    if count == 0:
        return None
    if gross_loss == 0:
        return Decimal(10) ** 9 if gross_profit > 0 else ZERO
    return gross_profit / gross_loss


@dataclass(frozen=True, slots=True)
class StageChange:
    """A step of the ramp: after trade number ``trade`` (1-based in the record), from stage
    ``old`` to ``new``, and why (the figures)."""

    trade: int
    old: int
    new: int
    why: str

    @property
    def promoted(self) -> bool:
        """True for a step up."""
        return self.new > self.old


class LaunchRamp:
    """Walks the trade record into the current stage (see the module doc)."""

    def __init__(self) -> None:
        self.stage = 1
        self.trades = 0
        self._recent: deque[Decimal] = deque(maxlen=PROFIT_FACTOR_WINDOW)
        self._at_stage = 0  # trades since the current stage began
        self._wins_at_stage = 0
        self._since_step_back: int | None = None  # trades since the last step back (None = none)

    @property
    def current(self) -> LaunchStage:
        """The stage in force."""
        return stage(self.stage)

    def replay(self, record: Iterable[tuple[Decimal, Decimal]]) -> "LaunchRamp":
        """Walk a whole record of (net PnL, equity after the trade) in quote, oldest first;
        returns self."""
        for net, equity in record:
            self.record(net, equity)
        return self

    def window_pf(self, size: int) -> Decimal | None:
        """Profit factor of the last ``size`` trades (None while fewer were closed)."""
        if len(self._recent) < size:
            return None
        return profit_factor(list(self._recent)[-size:])

    def record(self, net_pnl: Decimal, equity: Decimal) -> StageChange | None:
        """Book one closed trade (net PnL and the equity after it, quote); returns the stage
        change it causes, if any."""
        self.trades += 1
        self._recent.append(net_pnl)
        self._at_stage += 1
        if net_pnl > 0:
            self._wins_at_stage += 1
        if self._since_step_back is not None:
            self._since_step_back += 1
        old = self.stage
        change = self._equity_step_back(equity) or self._bad_run_step_back() or self._promotion(equity)
        if change is None:
            return None
        new, why = change
        self.stage = new
        self._at_stage = 0
        self._wins_at_stage = 0
        if new < old:
            self._since_step_back = 0
        return StageChange(self.trades, old, new, why)

    # -------------------------------------------------------------- rules
    def _equity_step_back(self, equity: Decimal) -> tuple[int, str] | None:
        if self.stage >= 5 and equity <= EQUITY_FOR_7X:
            return 4, f"equity {equity:.2f} ≤ {EQUITY_FOR_7X}"
        if self.stage >= 4 and equity <= EQUITY_FOR_3_POSITIONS:
            return 3, f"equity {equity:.2f} ≤ {EQUITY_FOR_3_POSITIONS}"
        return None

    def _bad_run(self) -> Decimal | None:
        """The last 20 trades' profit factor when it is below 1.0, else None."""
        pf = self.window_pf(STEP_BACK_WINDOW)
        return pf if pf is not None and pf < STEP_BACK_PROFIT_FACTOR else None

    def _bad_run_step_back(self) -> tuple[int, str] | None:
        if self.stage == 1:
            return None
        pf = self._bad_run()
        if pf is None or (self._since_step_back is not None and self._since_step_back < STEP_BACK_WINDOW):
            return None
        return self.stage - 1, (f"profit factor {pf:.2f} < {STEP_BACK_PROFIT_FACTOR} over the last "
                                f"{STEP_BACK_WINDOW} trades")

    def _promotion(self, equity: Decimal) -> tuple[int, str] | None:
        if self.stage == len(LAUNCH_STAGES) or self._bad_run() is not None:
            return None
        if self.stage == 1:
            if self._wins_at_stage >= WINS_FOR_STAGE_2:
                return 2, f"{self._wins_at_stage} winning trades at stage 1"
            return None
        if self._at_stage < MIN_TRADES_AT_STAGE:
            return None
        if self.stage == 2:
            pf = self.window_pf(FULL_AFTER_TRADES)
            if self.trades >= FULL_AFTER_TRADES and pf is not None and pf > FULL_PROFIT_FACTOR:
                return 3, f"{self.trades} trades, profit factor {pf:.2f} > {FULL_PROFIT_FACTOR} over the last 50"
            return None
        if self.stage == 3:
            if equity > EQUITY_FOR_3_POSITIONS:
                return 4, f"equity {equity:.2f} > {EQUITY_FOR_3_POSITIONS}"
            return None
        if self.stage == 4:
            if equity > EQUITY_FOR_7X:
                return 5, f"equity {equity:.2f} > {EQUITY_FOR_7X}"
            return None
        pf = self.window_pf(PROFIT_FACTOR_WINDOW)
        if pf is not None and pf > RISK_1PCT_PROFIT_FACTOR:
            return 6, f"profit factor {pf:.2f} > {RISK_1PCT_PROFIT_FACTOR} over the last {PROFIT_FACTOR_WINDOW} trades"
        return None

    def next_step(self) -> str:
        """What the next promotion needs, in words ("" at the last stage)."""
        if self.stage == len(LAUNCH_STAGES):
            return ""
        target = stage(self.stage + 1)
        if self.stage == 1:
            return f"stage 2 after {WINS_FOR_STAGE_2} winning trades ({self._wins_at_stage} so far)"
        pf = self.window_pf(PROFIT_FACTOR_WINDOW)
        pf_text = "n/a" if pf is None else f"{min(pf, Decimal(999)):.2f}"
        return f"stage {target.number} at {target.unlock} (trades {self.trades}, PF last 50 {pf_text})"


def record_from_trades(nets: list[Decimal], balance_now: Decimal) -> list[tuple[Decimal, Decimal]]:
    """(net PnL, equity after the trade) for each closed trade's ``nets`` (quote, oldest first),
    equities rebuilt backwards from the wallet balance now (the trade record in SQLite plus the
    account, SPEC Z-5)."""
    after = balance_now
    out: list[tuple[Decimal, Decimal]] = []
    for net in reversed(nets):
        out.append((net, after))
        after -= net
    out.reverse()
    return out
