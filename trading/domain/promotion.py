"""The promotion gate for live trading (SPEC S-7; seed 003 §4, §6): ``optiflow run --live`` starts
only when the account's demo record shows the strategy works on the exchange.

Default gate: ≥ 20 closed demo trades, a win rate ≥ 55 % over them, and no unresolved critical
monitor incident (M-1) — an incident still open is unresolved through the last 24 h, whenever it
opened. ``--skip-gate`` overrides it; the override is printed, sent and audited. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

GATE_MIN_TRADES = 20
GATE_MIN_WIN_RATE = Decimal(55)
GATE_INCIDENT_HOURS = 24
# Monitor incidents (M-1 kinds) that do not block the gate: informational only.
NON_CRITICAL_INCIDENTS = frozenset({"POSITION_TOO_OLD"})


@dataclass(frozen=True, slots=True)
class GateResult:
    """The gate's verdict: ``passed``, the demo record (closed demo trades, wins, win rate in %)
    and the open critical incidents (kinds) that block it."""

    passed: bool
    demo_trades: int
    wins: int
    win_rate: Decimal
    incidents: tuple[str, ...] = ()

    def reasons(self) -> list[str]:
        """What fails, in words (empty when it passed)."""
        out = []
        if self.demo_trades < GATE_MIN_TRADES:
            out.append(f"{self.demo_trades} closed demo trades (needs ≥ {GATE_MIN_TRADES})")
        elif self.win_rate < GATE_MIN_WIN_RATE:
            out.append(f"demo win rate {self.win_rate:.1f} % (needs ≥ {GATE_MIN_WIN_RATE} %)")
        if self.incidents:
            out.append(f"unresolved critical incident(s) in the last {GATE_INCIDENT_HOURS} h: "
                       + ", ".join(self.incidents))
        return out

    def line(self) -> str:
        """One line: the verdict and the figures."""
        record = (f"{self.demo_trades} demo trades, win rate {self.win_rate:.1f} %" if self.demo_trades
                  else "no demo record")
        if self.passed:
            return f"promotion gate (S-7) met: {record}, no open critical incident"
        return "promotion gate (S-7) not met: " + "; ".join(self.reasons())


def promotion_gate(demo_nets: Sequence[Decimal], open_incidents: Iterable[str]) -> GateResult:
    """Judge the demo record: ``demo_nets`` the net PnL (quote) of each closed demo trade,
    ``open_incidents`` the kinds of the monitor incidents still open (SPEC S-7, M-1)."""
    trades = len(demo_nets)
    wins = sum(1 for n in demo_nets if n > 0)
    win_rate = Decimal(wins) * 100 / trades if trades else Decimal(0)
    critical = tuple(sorted({k for k in open_incidents if k not in NON_CRITICAL_INCIDENTS}))
    passed = trades >= GATE_MIN_TRADES and win_rate >= GATE_MIN_WIN_RATE and not critical
    return GateResult(passed, trades, wins, win_rate, critical)
