"""Market regime per symbol from Kaufman's efficiency ratio (SPEC S-12).

The efficiency ratio (P. J. Kaufman, *Smarter Trading*, McGraw-Hill 1995; the "ER" behind his
adaptive moving average) measures how much of the path the price walked over the last ``n``
changes was net progress::

    ER = |close_t − close_{t−n}| / Σ_{i=t−n+1..t} |close_i − close_{i−1}|

1 is a straight line (every move in one direction), 0 is pure back-and-forth. It is scale-free
(no unit), so one pair of thresholds serves every symbol and timeframe. Sizing, exits and the
scaling ladder read the regime; this module only classifies.
"""

from __future__ import annotations

from enum import Enum

from trading.domain.errors import ConfigError

# Resync early once the running sum falls below this fraction of its peak since the last resync:
# the rounding residue (≈ period × 1e-16 × peak) then stays below 1e-11 of the sum.
_CANCELLATION = 1e-4


class Regime(str, Enum):
    """SPEC S-12 market regime of one symbol."""

    TRENDING = "trending"  # ER ≥ trending_er: price mostly goes one way
    RANGING = "ranging"  # in between: swings with some net progress
    CHOPPY = "choppy"  # ER < choppy_er: mostly noise, little net progress


class RegimeDetector:
    """Incremental Kaufman efficiency ratio and regime of one symbol (SPEC S-12).

    O(1) per close and no container allocation per update (the replay hot path): a ring buffer
    of the last ``period`` closes gives close_{t−n}, a ring of the last ``period`` absolute
    changes feeds a running sum (the "noise"). Adding and subtracting floats leaves rounding
    residue, so the sum is recomputed from the ring once per lap — O(period) every ``period``
    closes — and also at once when it falls below 1e-4 of its peak since the last resync (a
    spike leaving the window before quiet moves, where the residue would swamp the sum).

    Classification: ER ≥ ``trending_er`` → TRENDING; ER < ``choppy_er`` → CHOPPY; else
    RANGING. A perfectly flat window (no movement at all) has ER 0: no trend to follow.

    Args:
        period: number of close-to-close changes in the window (candles), ≥ 1; 20 by default.
        trending_er: ER at or above which the regime is TRENDING (0–1), 0.35 by default.
        choppy_er: ER below which the regime is CHOPPY (0–1, ≤ trending_er), 0.15 by default.

    Attributes:
        efficiency_ratio: the latest ER in [0, 1], None until ``period + 1`` closes were seen.
        regime: the latest :class:`Regime`, None until warm.
    """

    __slots__ = (
        "period", "trending_er", "choppy_er", "efficiency_ratio", "regime",
        "_closes", "_moves", "_idx", "_noise", "_peak", "_count",
    )

    def __init__(self, period: int = 20, trending_er: float = 0.35, choppy_er: float = 0.15) -> None:
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ConfigError(f"regime period must be a positive whole number of candles, got {period!r}")
        if not 0.0 <= choppy_er <= trending_er <= 1.0:
            raise ConfigError(
                "regime thresholds need 0 ≤ choppy_er ≤ trending_er ≤ 1, "
                f"got choppy_er={choppy_er} trending_er={trending_er}"
            )
        self.period = period
        self.trending_er = trending_er
        self.choppy_er = choppy_er
        self.efficiency_ratio: float | None = None
        self.regime: Regime | None = None
        # Slot i holds close_t and |close_t − close_{t−1}| for t ≡ i (mod period); before it is
        # overwritten it holds close_{t−n} and the change that leaves the window.
        self._closes = [0.0] * period
        self._moves = [0.0] * period
        self._idx = 0
        self._noise = 0.0  # Σ of the moves in the ring
        self._peak = 0.0  # largest running sum since the last resync
        self._count = 0  # closes seen, capped at period (warm from the next close on)

    def update(self, close: float) -> Regime | None:
        """Add one close (quote); return the regime, or None until ``period + 1`` closes
        (``period`` changes) have been seen."""
        i = self._idx
        closes = self._closes
        moves = self._moves
        count = self._count
        # The very first close has no previous one: its "move" is 0, which is exactly what the
        # running sum must lose when it leaves the window.
        move = abs(close - closes[i - 1]) if count else 0.0
        oldest = closes[i]  # close_{t−n} once count ≥ period
        noise = self._noise - moves[i] + move
        closes[i] = close
        moves[i] = move
        i += 1
        if i == self.period:
            i = 0
            noise = sum(moves)  # end of a lap: resync against float drift (see class docstring)
            self._peak = noise
        elif noise > self._peak:
            self._peak = noise
        elif noise < self._peak * _CANCELLATION:
            # A big move left the window: the residue it left in the sum (≈ ulp of the peak)
            # could dwarf what remains, so resync now rather than at the end of the lap.
            noise = sum(moves)
            self._peak = noise
        self._idx = i
        self._noise = noise
        if count < self.period:
            self._count = count + 1
            return None
        direction = abs(close - oldest)
        # Triangle inequality: direction ≤ noise; min() absorbs a last-ulp overshoot.
        er = min(1.0, direction / noise) if noise > 0.0 else 0.0
        self.efficiency_ratio = er
        if er >= self.trending_er:
            regime = Regime.TRENDING
        elif er < self.choppy_er:
            regime = Regime.CHOPPY
        else:
            regime = Regime.RANGING
        self.regime = regime
        return regime
