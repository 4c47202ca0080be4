"""Monitor M-1: every minute the caller passes a :class:`MonitorSnapshot` (with its clock) and
the keys of the incidents still open; :func:`detect` finds the incidents of this moment and
:func:`diff` says which are new (alert once) and which cleared (close). Pure: no I/O, no clock
of its own, no aiogram (STYLE: freqtrade protections with the clock passed in).

Conditions (SPEC M-1): daily loss ≥ 1.5 %, SL streak ≥ 2, position older than 60 min, > 5
errors in the recent log window, feed stale, position without stop, local vs exchange mismatch,
and KPIs below their §11 minimum after ≥ 30 trades ("strategy underperforming": win rate, profit
factor or average R:R of the recent trades, at the targets of the equity tier).
Each incident names the playbook (SPEC T-6) a trader should open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from trading.domain.kpi import MIN_TRADES_FOR_KPIS, underperforming

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class MonitorLimits:
    """Thresholds of SPEC M-1: daily loss in % of day-start equity, SL streak (stop-losses in a
    row), position age (ms), errors allowed in the log window."""

    daily_loss_pct: Decimal = Decimal("1.5")
    sl_streak: int = 2
    max_position_age_ms: int = 60 * MINUTE_MS
    max_recent_errors: int = 5
    min_trades_for_kpis: int = MIN_TRADES_FOR_KPIS


@dataclass(frozen=True, slots=True)
class WatchedPosition:
    """An open position as the monitor sees it: opened_ms (epoch ms UTC), has_stop = a working
    stop-loss order rests on the exchange."""

    bot: str
    symbol: str
    opened_ms: int
    has_stop: bool


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """The state at ``now_ms`` (epoch ms UTC, the caller's clock).

    Attributes:
        daily_loss_pct: today's realised + unrealised loss in % of day-start equity (0 = no loss).
        sl_streaks: per bot, stop-losses in a row.
        positions: open positions.
        recent_errors: ERROR log lines in the recent window.
        feed_stale: the market feed stopped moving (the caller decides, it knows the feed).
        local_contracts / exchange_contracts: per symbol the signed net contracts we hold and the
            exchange reports; ``exchange_contracts`` None = not known this minute (not checked).
    """

    now_ms: int
    daily_loss_pct: Decimal
    sl_streaks: Mapping[str, int]
    positions: tuple[WatchedPosition, ...]
    recent_errors: int
    feed_stale: bool
    local_contracts: Mapping[str, Decimal] = field(default_factory=dict)
    exchange_contracts: Mapping[str, Decimal] | None = None
    recent_nets: tuple[Decimal, ...] = ()
    tier_index: int = 0


@dataclass(frozen=True, slots=True)
class Incident:
    """One condition that holds now: ``key`` identifies it across minutes and restarts (e.g.
    ``POSITION_TOO_OLD|A|BTC/USDT:USDT``), ``kind`` is the UPPER_SNAKE code, ``playbook`` the
    key of its playbook (SPEC T-6), ``text`` what the alert says."""

    key: str
    kind: str
    bot: str
    symbol: str
    playbook: str
    text: str


def detect(snapshot: MonitorSnapshot, limits: MonitorLimits = MonitorLimits()) -> list[Incident]:
    """Every M-1 condition that holds in ``snapshot``, in a stable order."""
    found: list[Incident] = []
    if snapshot.daily_loss_pct >= limits.daily_loss_pct:
        found.append(Incident("DAILY_LOSS", "DAILY_LOSS", "", "", "daily_loss",
                              f"Daily loss {snapshot.daily_loss_pct:.2f}% ≥ {limits.daily_loss_pct}% of day-start equity"))
    for bot, streak in sorted(snapshot.sl_streaks.items()):
        if streak >= limits.sl_streak:
            found.append(Incident(f"SL_STREAK|{bot}", "SL_STREAK", bot, "", "daily_loss",
                                  f"Bot {bot}: {streak} stop-losses in a row"))
    for p in snapshot.positions:
        age_min = (snapshot.now_ms - p.opened_ms) // MINUTE_MS
        if snapshot.now_ms - p.opened_ms > limits.max_position_age_ms:
            found.append(Incident(f"POSITION_TOO_OLD|{p.bot}|{p.symbol}", "POSITION_TOO_OLD", p.bot, p.symbol,
                                  "stuck_order", f"{p.symbol} (bot {p.bot}) open for {age_min} min"))
        if not p.has_stop:
            found.append(Incident(f"NO_STOP|{p.bot}|{p.symbol}", "NO_STOP", p.bot, p.symbol, "no_stop",
                                  f"{p.symbol} (bot {p.bot}) has no working stop-loss"))
    if snapshot.recent_errors > limits.max_recent_errors:
        found.append(Incident("LOG_ERRORS", "LOG_ERRORS", "", "", "exchange_down",
                              f"{snapshot.recent_errors} errors in the recent log (> {limits.max_recent_errors})"))
    if snapshot.feed_stale:
        found.append(Incident("FEED_STALE", "FEED_STALE", "", "", "ws_down", "Market feed is stale"))
    below = underperforming(snapshot.recent_nets, snapshot.tier_index, limits.min_trades_for_kpis)
    if below:
        found.append(Incident("STRATEGY_UNDERPERFORMING", "STRATEGY_UNDERPERFORMING", "", "", "underperforming",
                              f"Strategy underperforming over the last {len(snapshot.recent_nets)} trades: "
                              + "; ".join(below) + " (§11 minimum)"))
    if snapshot.exchange_contracts is not None:
        symbols = sorted(set(snapshot.local_contracts) | set(snapshot.exchange_contracts))
        for symbol in symbols:
            local = snapshot.local_contracts.get(symbol, Decimal(0))
            remote = snapshot.exchange_contracts.get(symbol, Decimal(0))
            if local != remote:
                found.append(Incident(f"POSITION_MISMATCH|{symbol}", "POSITION_MISMATCH", "", symbol,
                                      "balance_mismatch",
                                      f"{symbol}: local {local} contracts, exchange {remote} contracts"))
    return found


def diff(open_keys: Iterable[str], found: Iterable[Incident]) -> tuple[list[Incident], list[str]]:
    """``(new incidents to alert once, keys of open incidents whose condition cleared)``."""
    open_set = set(open_keys)
    found = list(found)
    found_keys = {i.key for i in found}
    return [i for i in found if i.key not in open_set], sorted(open_set - found_keys)


class FeedWatch:
    """Decides "feed stale" (SPEC M-1) from what the caller sees each minute: the market clock
    (epoch ms of the last price) and the wall clock. Stale when the feed is supposed to run but
    the market clock has not moved for ``stale_after_ms`` of wall time.

    Args:
        stale_after_ms: wall time without a new price that counts as stale (default 3 min).
    """

    def __init__(self, stale_after_ms: int = 3 * MINUTE_MS) -> None:
        self.stale_after_ms = stale_after_ms
        self._last_market_ms: int | None = None
        self._moved_wall_ms = 0

    def observe(self, market_ms: int, wall_ms: int, feeding: bool) -> bool:
        """Record one observation; True when the feed is stale now."""
        if market_ms != self._last_market_ms or not feeding:
            self._last_market_ms = market_ms
            self._moved_wall_ms = wall_ms
            return False
        return wall_ms - self._moved_wall_ms >= self.stale_after_ms
