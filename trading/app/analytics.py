"""Signal analytics (SPEC S-13, T-2 analytics): why signals did or did not become trades.

:class:`AnalyticsService` answers /signalstats, /failstats, /blockers, /near, /topmissed and
/filters from the ``signals`` table (aggregated in SQL by ``storage.SignalRepository``) and the
trading config. Windows are "the last N hours" before ``clock.now_ms()`` — the replay clock in
paper mode, so a replayed June 2025 run has data in "the last 24 h". Times are epoch ms UTC,
percentages Decimal percent (12.5 = 12.5 %), scores in score points. No aiogram here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.domain.config import TradingConfig
from trading.domain.errors import OptiFlowError
from trading.domain.models import SignalEvaluation
from trading.ports import Clock

SCORE_BELOW_MIN = "SCORE_BELOW_MIN"  # the engine's reason code for a score under the bot's minimum
HOUR_MS = 3_600_000


def percent(part: int, whole: int) -> Decimal:
    """``part`` as % of ``whole`` (0 when ``whole`` is 0), exact Decimal."""
    return Decimal(100 * part) / Decimal(whole) if whole else Decimal(0)


class UnknownBot(OptiFlowError):
    """A bot name that is not in the trading config."""


# ------------------------------------------------------------------ aggregate rows (storage)
@dataclass(frozen=True, slots=True)
class SymbolSignalStats:
    """Evaluated signals of one symbol: counts, average and best score (score points)."""

    symbol: str
    evaluated: int
    passed: int
    avg_score: float
    max_score: float

    @property
    def pass_rate_pct(self) -> Decimal:
        """Passed signals in % of evaluated ones."""
        return percent(self.passed, self.evaluated)


@dataclass(frozen=True, slots=True)
class BlockerCount:
    """How often one reason code was the first blocker: count, share in % of all blocked
    signals of the window, and how many distinct symbols it hit."""

    reason: str
    count: int
    share_pct: Decimal
    symbols: int


@dataclass(frozen=True, slots=True)
class SymbolBlockerCount:
    """Blocked signals of one symbol with one first-blocker reason code."""

    symbol: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class MissedSymbol:
    """A symbol whose signals met their minimum score but were blocked by a later check:
    ``missed`` such signals, mostly by ``top_blocker`` (``top_blocker_count`` of them)."""

    symbol: str
    missed: int
    top_blocker: str
    top_blocker_count: int


# ------------------------------------------------------------------------ service results
@dataclass(frozen=True, slots=True)
class Window:
    """The analysed period: ``since_ms`` inclusive, ``until_ms`` exclusive (epoch ms UTC),
    its length in hours, and the bot it is limited to (None = every bot)."""

    since_ms: int
    until_ms: int
    hours: int
    bot: str | None = None


@dataclass(frozen=True, slots=True)
class SignalStatsReport:
    """/signalstats: per-symbol evaluated / passed / scores, busiest symbol first."""

    window: Window
    symbols: tuple[SymbolSignalStats, ...]

    @property
    def evaluated(self) -> int:
        """Signals evaluated in the window."""
        return sum(s.evaluated for s in self.symbols)

    @property
    def passed(self) -> int:
        """Signals that passed every check (an entry order was sent)."""
        return sum(s.passed for s in self.symbols)

    @property
    def pass_rate_pct(self) -> Decimal:
        """Passed in % of evaluated."""
        return percent(self.passed, self.evaluated)


@dataclass(frozen=True, slots=True)
class SymbolFailures:
    """/failstats row: a symbol's blocked signals (of ``evaluated``) and their reason codes,
    most frequent first."""

    symbol: str
    evaluated: int
    blocked: int
    reasons: tuple[tuple[str, int], ...]

    @property
    def blocked_pct(self) -> Decimal:
        """Blocked in % of evaluated."""
        return percent(self.blocked, self.evaluated)


@dataclass(frozen=True, slots=True)
class FailStatsReport:
    """/failstats: blocked signals per symbol, most blocked first."""

    window: Window
    evaluated: int
    symbols: tuple[SymbolFailures, ...]


@dataclass(frozen=True, slots=True)
class BlockersReport:
    """/blockers: reason codes by how many signals they blocked first."""

    window: Window
    evaluated: int
    blockers: tuple[BlockerCount, ...]

    @property
    def blocked(self) -> int:
        """Signals blocked in the window."""
        return sum(b.count for b in self.blockers)


@dataclass(frozen=True, slots=True)
class NearMissReport:
    """/near: blocked signals within ``margin`` score points of their minimum, or blocked by a
    check after the score (they met it), newest first."""

    window: Window
    evaluated: int
    margin: float
    signals: tuple[SignalEvaluation, ...]


@dataclass(frozen=True, slots=True)
class TopMissedReport:
    """/topmissed: symbols ranked by signals that met the score but were blocked."""

    window: Window
    evaluated: int
    symbols: tuple[MissedSymbol, ...]


@dataclass(frozen=True, slots=True)
class BotFilters:
    """/filters: every setting of one bot profile, nested ones as ``strategy.rsi_oversold``.
    Values are as configured (Decimal %, floats, tuples; None = off or the tier default)."""

    bot: str
    values: tuple[tuple[str, Any], ...]


def flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": 1, "strategy": {"b": 2}}`` → ``[("a", 1), ("strategy.b", 2)]``, in field order."""
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


class AnalyticsService:
    """The analytics facade the chat layer calls (STYLE: freqtrade's RPC, typed results).

    ``store`` is a ``storage.Storage`` (only ``store.signals`` is used); ``clock`` sets "now".
    """

    def __init__(self, store: Any, config: TradingConfig, clock: Clock) -> None:
        self._signals = store.signals
        self._config = config
        self._clock = clock

    def bot_names(self) -> tuple[str, ...]:
        """The configured bot profiles, in config order."""
        return tuple(b.name for b in self._config.bots)

    def window(self, hours: int = 24, bot: str | None = None) -> Window:
        """The last ``hours`` hours up to and including now (clock time).

        Raises:
            ValueError: ``hours`` < 1.
            UnknownBot: ``bot`` is not configured.
        """
        if hours < 1:
            raise ValueError(f"hours must be ≥ 1, got {hours}")
        self._check_bot(bot)
        until = self._clock.now_ms() + 1  # signals stamped "now" belong to the window
        return Window(until - hours * HOUR_MS, until, hours, bot)

    async def signal_stats(self, hours: int = 24, bot: str | None = None) -> SignalStatsReport:
        """Per-symbol evaluated and passed signals with average / best score (S-13)."""
        w = self.window(hours, bot)
        return SignalStatsReport(w, tuple(await self._signals.stats_by_symbol(**_range(w))))

    async def fail_stats(self, hours: int = 24, bot: str | None = None) -> FailStatsReport:
        """Per-symbol blocked signals and their first blockers, most blocked symbol first."""
        w = self.window(hours, bot)
        evaluated = {s.symbol: s.evaluated for s in await self._signals.stats_by_symbol(**_range(w))}
        reasons: dict[str, list[tuple[str, int]]] = {}
        for row in await self._signals.blocker_counts_by_symbol(**_range(w)):  # one row per (symbol, code)
            reasons.setdefault(row.symbol, []).append((row.reason, row.count))
        symbols = [
            SymbolFailures(symbol, evaluated.get(symbol, 0), sum(n for _, n in codes), tuple(codes))
            for symbol, codes in reasons.items()
        ]
        symbols.sort(key=lambda s: (-s.blocked, s.symbol))
        return FailStatsReport(w, sum(evaluated.values()), tuple(symbols))

    async def blockers(self, hours: int = 24, bot: str | None = None) -> BlockersReport:
        """Reason codes by how many signals they blocked first, with share % and symbols hit."""
        w = self.window(hours, bot)
        counts = await self._signals.blocker_counts(**_range(w))
        return BlockersReport(w, await self._signals.count(**_range(w)), tuple(counts))

    async def near(
        self, limit: int = 10, hours: int = 24, bot: str | None = None, margin: float = 0.5
    ) -> NearMissReport:
        """The newest ``limit`` near misses: blocked with score ≥ min score − ``margin`` (score
        points), or blocked by a check after the score."""
        w = self.window(hours, bot)
        found = await self._signals.near_misses(limit, margin, **_range(w))
        return NearMissReport(w, await self._signals.count(**_range(w)), margin, tuple(found))

    async def top_missed(self, limit: int = 10, hours: int = 24, bot: str | None = None) -> TopMissedReport:
        """The ``limit`` symbols with most signals that met their min score but were blocked."""
        w = self.window(hours, bot)
        found = await self._signals.top_missed(limit, **_range(w))
        return TopMissedReport(w, await self._signals.count(**_range(w)), tuple(found))

    def filters(self, bot: str | None = None) -> tuple[BotFilters, ...]:
        """Current settings of every bot (or of ``bot``): all BotProfile and StrategyConfig
        fields, read generically so fields added later show up by themselves.

        Raises:
            UnknownBot: ``bot`` is not configured.
        """
        self._check_bot(bot)
        return tuple(
            BotFilters(profile.name, tuple(flatten(profile.model_dump())))
            for profile in self._config.bots
            if bot is None or profile.name == bot
        )

    def _check_bot(self, bot: str | None) -> None:
        if bot is not None and bot not in self.bot_names():
            raise UnknownBot(f"Unknown bot: {bot[:32]} (bots: {', '.join(self.bot_names())})")


def _range(window: Window) -> dict[str, Any]:
    return {"since_ms": window.since_ms, "until_ms": window.until_ms, "bot": window.bot}
