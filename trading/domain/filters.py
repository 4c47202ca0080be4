"""Pre-trade filters: spread, liquidity, volatility, safety layer, notional (SPEC F-1 … F-5).

Same shape as :mod:`trading.domain.risk`: small checks, each returning ``None`` (pass) or a denying
:class:`RiskDecision` with an UPPER_SNAKE code and a detail such as ``spread=0.12% max=0.1%``.
:func:`run_filters` returns the first denial, which the engine records with the signal (S-13).
The filters fail closed: a missing input denies with ``MISSING_DATA`` naming the field, and an
exception inside a check denies with ``FILTER_ERROR``.

Units: money and notional in quote (Decimal); spread and ATR% in % (0.1 = 0.1 %); ATR, close
in quote and volume in contracts (floats, from the indicators); time in epoch ms UTC.

Also here: :class:`MarketStats` (rolling 24 h quote volume and on-demand medians per symbol,
fed every candle) and :class:`EntryLog` (a bot's entry times for the F-4 cooldown and rate).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from statistics import median

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.domain.errors import ConfigError
from trading.domain.models import RiskDecision
from trading.domain.reasons import ReasonCode

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# MarketStats resyncs its running sum early once it falls below this fraction of its peak.
_CANCELLATION = 1e-4


class FilterConfig(BaseModel):
    """SPEC F-1 … F-5 thresholds (defaults = SPEC). Percentages in %, money in quote.

    max_spread_pct: F-1, bid/ask spread must be below this % of mid.
    liquidity_multiple: F-2, 24 h quote volume must exceed this × the intended notional.
    liquidity_floor_*: F-2 floor (quote) = min(cap, base + step × ⌊max(0, equity − from_equity)
        / every⌋); see :func:`liquidity_floor`.
    min_atr_pct / min_atr_ticks: F-3, ATR ≥ this % of close and ≥ this many ticks.
    volume_vs_median / atr_vs_median: F-4, candle volume and ATR vs their medians (multiples).
    min_seconds_between_entries: F-4 cooldown per symbol (seconds); max_entries_per_hour: F-4
        entries per rolling hour per bot.
    min_notional_floor: F-5 floor (quote) below which no order goes, whatever the exchange says.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_spread_pct: float = Field(default=0.1, gt=0)
    liquidity_multiple: Decimal = Field(default=Decimal(100), ge=0)
    liquidity_floor_base: Decimal = Field(default=Decimal(20000), ge=0)
    liquidity_floor_step: Decimal = Field(default=Decimal(5000), ge=0)
    liquidity_floor_every: Decimal = Field(default=Decimal(250), gt=0)
    liquidity_floor_from_equity: Decimal = Field(default=Decimal(120), ge=0)
    liquidity_floor_cap: Decimal = Field(default=Decimal(25000), ge=0)
    # SPEC allows 0.17–0.19; the wider range leaves room for 1m/15m profiles and experiments.
    min_atr_pct: float = Field(default=0.17, ge=0.05, le=1.0)
    min_atr_ticks: int = Field(default=3, ge=0)
    volume_vs_median: float = Field(default=1.2, ge=0)
    atr_vs_median: float = Field(default=0.9, ge=0)
    min_seconds_between_entries: int = Field(default=300, ge=0)
    max_entries_per_hour: int = Field(default=6, ge=1)
    min_notional_floor: Decimal = Field(default=Decimal(5), gt=0)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> "FilterConfig":
        if self.liquidity_floor_cap < self.liquidity_floor_base:
            raise ValueError("liquidity_floor_cap must be ≥ liquidity_floor_base")
        return self


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What the filters look at for one candidate entry, captured at decision time.

    spread_pct: (ask − bid) / mid in %; quote_volume_24h: quote; intended_notional (before
    rounding), rounded_notional (after rounding the contracts to the step) and
    exchange_min_notional: quote; equity: quote; atr, close: quote; tick_size: quote;
    volume / median_volume: contracts per candle; median_atr: quote; last_entry_ms (this
    symbol, this bot) and now_ms: epoch ms UTC; entries_last_hour: this bot's entries in the
    last hour. None means unknown (the filter that needs it denies).
    """

    symbol: str
    spread_pct: float | None
    quote_volume_24h: float | None
    intended_notional: Decimal
    equity: Decimal
    atr: float
    close: float
    tick_size: Decimal
    volume: float
    median_volume: float | None
    median_atr: float | None
    last_entry_ms: int | None
    entries_last_hour: int
    now_ms: int
    rounded_notional: Decimal
    exchange_min_notional: Decimal


Check = Callable[[FilterContext, FilterConfig], RiskDecision | None]


def _missing(name: str, value: object) -> RiskDecision:
    return RiskDecision(False, ReasonCode.MISSING_DATA, f"{name}={value}")


def _unknown(x: float | None) -> bool:
    """None or NaN (the indicators report NaN while warming up)."""
    return x is None or math.isnan(x)


def check_spread(ctx: FilterContext, cfg: FilterConfig) -> RiskDecision | None:
    """SPEC F-1: the bid/ask spread must be < max_spread_pct % of mid."""
    if _unknown(ctx.spread_pct):
        return _missing("spread_pct", ctx.spread_pct)
    assert ctx.spread_pct is not None
    if not ctx.spread_pct < cfg.max_spread_pct:
        return RiskDecision(
            False, ReasonCode.SPREAD_TOO_WIDE, f"spread={ctx.spread_pct:.4g}% max={cfg.max_spread_pct:g}%"
        )
    return None


def liquidity_floor(equity: Decimal, cfg: FilterConfig) -> Decimal:
    """SPEC F-2 minimum 24 h quote volume (quote) for an account of ``equity`` (quote).

    min(cap, base + step × ⌊max(0, equity − from_equity) / every⌋): 20 000 up to 369.99 of
    equity, +5 000 per further 250, capped at 25 000 with the defaults.
    """
    above = max(Decimal(0), equity - cfg.liquidity_floor_from_equity)
    steps = above // cfg.liquidity_floor_every  # non-negative, so // is the floor
    return min(cfg.liquidity_floor_cap, cfg.liquidity_floor_base + cfg.liquidity_floor_step * steps)


def check_liquidity(ctx: FilterContext, cfg: FilterConfig) -> RiskDecision | None:
    """SPEC F-2: 24 h quote volume > liquidity_multiple × intended notional and ≥ the floor."""
    if _unknown(ctx.quote_volume_24h):
        return _missing("quote_volume_24h", ctx.quote_volume_24h)
    assert ctx.quote_volume_24h is not None
    volume = Decimal(str(ctx.quote_volume_24h))
    need = cfg.liquidity_multiple * ctx.intended_notional
    floor = liquidity_floor(ctx.equity, cfg)
    if not (volume > need and volume >= floor):
        return RiskDecision(
            False,
            ReasonCode.LOW_LIQUIDITY,
            f"volume24h={volume:.0f} need>{need:.0f} ({cfg.liquidity_multiple}x notional) floor={floor}",
        )
    return None


def check_volatility(ctx: FilterContext, cfg: FilterConfig) -> RiskDecision | None:
    """SPEC F-3: ATR ≥ min_atr_pct % of the close and ATR ≥ min_atr_ticks × tick size."""
    if _unknown(ctx.atr) or ctx.atr < 0:
        return _missing("atr", ctx.atr)
    if _unknown(ctx.close) or ctx.close <= 0:
        return _missing("close", ctx.close)
    if ctx.tick_size <= 0:
        return _missing("tick_size", ctx.tick_size)
    atr_pct = ctx.atr * 100.0 / ctx.close
    if atr_pct < cfg.min_atr_pct:
        return RiskDecision(False, ReasonCode.LOW_VOLATILITY, f"atr={atr_pct:.3f}% min={cfg.min_atr_pct:g}%")
    # Decimal, so that an ATR of exactly 3 ticks passes (3 × 0.1 is 0.30000000000000004 in float).
    min_atr = cfg.min_atr_ticks * ctx.tick_size
    if Decimal(str(ctx.atr)) < min_atr:
        return RiskDecision(
            False, ReasonCode.LOW_VOLATILITY, f"atr={ctx.atr:.6g} min={min_atr} ({cfg.min_atr_ticks} ticks)"
        )
    return None


def check_safety(ctx: FilterContext, cfg: FilterConfig) -> RiskDecision | None:
    """SPEC F-4 safety layer: candle volume ≥ volume_vs_median × median volume; ATR ≥
    atr_vs_median × median ATR; ≥ min_seconds_between_entries since this bot's last entry on
    the symbol; fewer than max_entries_per_hour entries by this bot in the last hour."""
    if _unknown(ctx.volume):
        return _missing("volume", ctx.volume)
    if _unknown(ctx.median_volume):
        return _missing("median_volume", ctx.median_volume)
    if _unknown(ctx.median_atr):
        return _missing("median_atr", ctx.median_atr)
    if _unknown(ctx.atr):
        return _missing("atr", ctx.atr)
    assert ctx.median_volume is not None and ctx.median_atr is not None
    if ctx.volume < cfg.volume_vs_median * ctx.median_volume:
        return RiskDecision(
            False,
            ReasonCode.LOW_VOLUME_VS_MEDIAN,
            f"volume={ctx.volume:.6g} min={cfg.volume_vs_median:g}x median {ctx.median_volume:.6g}",
        )
    if ctx.atr < cfg.atr_vs_median * ctx.median_atr:
        return RiskDecision(
            False,
            ReasonCode.LOW_ATR_VS_MEDIAN,
            f"atr={ctx.atr:.6g} min={cfg.atr_vs_median:g}x median {ctx.median_atr:.6g}",
        )
    if ctx.last_entry_ms is not None:
        elapsed_ms = ctx.now_ms - ctx.last_entry_ms
        if elapsed_ms < cfg.min_seconds_between_entries * 1000:
            return RiskDecision(
                False,
                ReasonCode.ENTRY_COOLDOWN,
                f"{ctx.symbol} last entry {elapsed_ms // 1000}s ago min={cfg.min_seconds_between_entries}s",
            )
    if ctx.entries_last_hour >= cfg.max_entries_per_hour:
        return RiskDecision(
            False,
            ReasonCode.ENTRY_RATE_LIMIT,
            f"entries={ctx.entries_last_hour} max={cfg.max_entries_per_hour} per hour",
        )
    return None


def check_notional(ctx: FilterContext, cfg: FilterConfig) -> RiskDecision | None:
    """SPEC F-5: the notional after rounding ≥ max(exchange MIN_NOTIONAL, min_notional_floor)."""
    minimum = max(ctx.exchange_min_notional, cfg.min_notional_floor)
    if ctx.rounded_notional < minimum:
        return RiskDecision(
            False, ReasonCode.NOTIONAL_BELOW_MINIMUM, f"notional={ctx.rounded_notional} min={minimum}"
        )
    return None


# SPEC order; the first denial is the "first filter that blocked" recorded for S-13.
FILTER_CHECKS: tuple[Check, ...] = (
    check_spread,
    check_liquidity,
    check_volatility,
    check_safety,
    check_notional,
)


def run_filters(
    ctx: FilterContext, cfg: FilterConfig, checks: Sequence[Check] = FILTER_CHECKS
) -> RiskDecision:
    """SPEC F-1 … F-5: the first denying filter's decision, or allow. An exception inside a
    check denies (``FILTER_ERROR``): the filters fail closed."""
    for check in checks:
        try:
            decision = check(ctx, cfg)
        except Exception as exc:  # noqa: BLE001 - fail closed on any bug or bad data
            return RiskDecision(False, ReasonCode.FILTER_ERROR, f"{check.__name__}: {exc!r}")
        if decision is not None:
            return decision
    return RiskDecision.allow()


class MarketStats:
    """Per-symbol candle statistics for F-2 and F-4, fed once per closed candle.

    Rolling 24 h quote volume = Σ volume × close (contracts × quote) over the last
    ``candles_per_day`` candles: a ring buffer and a running sum, resummed once per lap against
    float drift (as :class:`trading.domain.indicators.SMA`) and at once when the sum falls below 1e-4
    of its peak (a huge candle leaving the window). Medians of volume and ATR over the last
    ``median_window`` candles are kept as ring buffers and computed only when asked (only for
    candidates, O(w log w) then). :meth:`update` is O(1) amortised and allocates no container.

    Args:
        candles_per_day: candles in 24 h of the timeframe (288 for 5m), ≥ 1.
        median_window: candles in the F-4 medians (50 by default), ≥ 1.

    Attributes:
        quote_volume_24h: quote volume of the last ``candles_per_day`` candles (quote); None
            before the first candle. During the first day it is the sum so far — a lower
            bound of the true 24 h volume, so F-2 can only be stricter, never looser.
        candles: candles seen.
    """

    __slots__ = (
        "candles_per_day", "median_window", "quote_volume_24h", "candles",
        "_qv", "_qv_idx", "_qv_sum", "_qv_peak", "_vol", "_atr", "_vol_idx", "_atr_idx", "_vol_n", "_atr_n",
    )

    def __init__(self, candles_per_day: int = 288, median_window: int = 50) -> None:
        for name, value in (("candles_per_day", candles_per_day), ("median_window", median_window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number of candles, got {value!r}")
        self.candles_per_day = candles_per_day
        self.median_window = median_window
        self.quote_volume_24h: float | None = None
        self.candles = 0
        self._qv = [0.0] * candles_per_day
        self._qv_idx = 0
        self._qv_sum = 0.0
        self._qv_peak = 0.0  # largest running sum since the last resync
        self._vol = [0.0] * median_window
        self._atr = [0.0] * median_window
        self._vol_idx = self._atr_idx = 0
        self._vol_n = self._atr_n = 0  # filled slots, up to median_window

    @classmethod
    def for_timeframe(cls, timeframe_ms: int, median_window: int = 50) -> "MarketStats":
        """Stats for candles of ``timeframe_ms`` milliseconds (e.g. 300 000 for 5m)."""
        if timeframe_ms <= 0 or DAY_MS % timeframe_ms:
            raise ConfigError(f"timeframe of {timeframe_ms} ms does not divide a day")
        return cls(DAY_MS // timeframe_ms, median_window)

    def update(self, close: float, volume: float, atr: float | None) -> None:
        """Add one closed candle: close (quote), volume (contracts), ATR (quote; None or NaN
        while the ATR warms up — such candles do not enter the ATR median)."""
        qv = volume * close
        buf = self._qv
        i = self._qv_idx
        total = self._qv_sum - buf[i] + qv
        buf[i] = qv
        i += 1
        if i == self.candles_per_day:
            i = 0
            total = sum(buf)  # end of a lap: resync against float drift
            self._qv_peak = total
        elif total > self._qv_peak:
            self._qv_peak = total
        elif total < self._qv_peak * _CANCELLATION:
            # A huge candle left the window: its rounding residue could swamp what remains.
            total = sum(buf)
            self._qv_peak = total
        self._qv_idx = i
        self._qv_sum = total
        self.quote_volume_24h = total
        self.candles += 1

        j = self._vol_idx
        self._vol[j] = volume
        j += 1
        self._vol_idx = 0 if j == self.median_window else j
        if self._vol_n < self.median_window:
            self._vol_n += 1

        if atr is not None and not math.isnan(atr):
            k = self._atr_idx
            self._atr[k] = atr
            k += 1
            self._atr_idx = 0 if k == self.median_window else k
            if self._atr_n < self.median_window:
                self._atr_n += 1

    def median_volume(self) -> float | None:
        """Median candle volume (contracts) of the last ``median_window`` candles; None until
        the window is full (a median of a few candles would be noise, so F-4 denies)."""
        return median(self._vol) if self._vol_n == self.median_window else None

    def median_atr(self) -> float | None:
        """Median ATR (quote) of the last ``median_window`` candles with an ATR; None until
        the window is full."""
        return median(self._atr) if self._atr_n == self.median_window else None


class EntryLog:
    """One bot's entry times, for the F-4 cooldown per symbol and the hourly entry rate.

    Entries are recorded in time order (epoch ms UTC). ``entries_in_last_hour(now)`` counts
    entries with ``now − t < 1 h`` and prunes older ones, so the deque holds at most an hour
    of entries. After a restart the engine rebuilds it by recording the recent entries from
    SQLite.
    """

    __slots__ = ("_times", "_last")

    def __init__(self) -> None:
        self._times: deque[int] = deque()
        self._last: dict[str, int] = {}

    def record(self, symbol: str, ts_ms: int) -> None:
        """Note an entry on ``symbol`` at ``ts_ms`` (epoch ms UTC)."""
        self._times.append(ts_ms)
        if ts_ms > self._last.get(symbol, ts_ms - 1):
            self._last[symbol] = ts_ms

    def last_entry_ms(self, symbol: str) -> int | None:
        """Time of the latest entry on ``symbol`` (epoch ms UTC), None if there was none."""
        return self._last.get(symbol)

    def entries_in_last_hour(self, now_ms: int) -> int:
        """Entries in the hour before ``now_ms`` (epoch ms UTC), i.e. with now − t < 3 600 s."""
        times = self._times
        while times and now_ms - times[0] >= HOUR_MS:
            times.popleft()
        return len(times)
