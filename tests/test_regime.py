"""Market regime from Kaufman's efficiency ratio (SPEC S-12), checked on REAL BTC candles."""

from __future__ import annotations

import pytest

from trading.domain.errors import ConfigError
from trading.adapters.marketdata import default_data_dir, load_candles
from trading.domain.regime import Regime, RegimeDetector

WEEK_5M = 7 * 24 * 12


@pytest.fixture(scope="module")
def btc_closes() -> list[float]:
    return list(load_candles(default_data_dir(), "BTC/USDT:USDT", "5m").close)


def direct_er(closes: list[float], t: int, n: int) -> float:
    """Plain textbook ER at index t, recomputed from scratch."""
    noise = sum(abs(closes[i] - closes[i - 1]) for i in range(t - n + 1, t + 1))
    return abs(closes[t] - closes[t - n]) / noise if noise else 0.0


def feed(det: RegimeDetector, closes: list[float]) -> list[Regime | None]:
    return [det.update(c) for c in closes]


def test_s12_none_until_period_changes_seen():
    """SPEC S-12: no regime before n changes (n + 1 closes)."""
    det = RegimeDetector(period=5)
    out = feed(det, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert out == [None] * 5 and det.efficiency_ratio is None and det.regime is None
    assert det.update(6.0) is Regime.TRENDING


def test_s12_monotone_series_is_trending():
    """SPEC S-12: a straight line has ER 1 → TRENDING (up and down)."""
    det = RegimeDetector()
    assert feed(det, [100.0 + i for i in range(60)])[-1] is Regime.TRENDING
    assert det.efficiency_ratio == pytest.approx(1.0)
    det = RegimeDetector()
    assert feed(det, [100.0 - 0.5 * i for i in range(60)])[-1] is Regime.TRENDING


def test_s12_alternating_series_is_choppy():
    """SPEC S-12: back-and-forth has ER 0 → CHOPPY; a flat window also has ER 0."""
    det = RegimeDetector()
    out = feed(det, [100.0 + (i % 2) for i in range(60)])
    assert set(out[20:]) == {Regime.CHOPPY}
    assert det.efficiency_ratio == 0.0
    det = RegimeDetector(period=3)
    assert feed(det, [5.0] * 4)[-1] is Regime.CHOPPY and det.efficiency_ratio == 0.0


def test_s12_threshold_boundaries():
    """SPEC S-12: ER ≥ trending_er → TRENDING; ER < choppy_er → CHOPPY; else RANGING."""
    # period 4, moves +1 +1 +1 −1: ER = 2/4 = 0.5 exactly.
    closes = [0.0, 1.0, 2.0, 3.0, 2.0]
    assert feed(RegimeDetector(4, trending_er=0.5, choppy_er=0.1), closes)[-1] is Regime.TRENDING
    assert feed(RegimeDetector(4, trending_er=0.51, choppy_er=0.1), closes)[-1] is Regime.RANGING
    # moves +2 −1 +1 −1: ER = 1/5 = 0.2 exactly.
    closes = [0.0, 2.0, 1.0, 2.0, 1.0]
    assert feed(RegimeDetector(4, trending_er=0.5, choppy_er=0.2), closes)[-1] is Regime.RANGING
    assert feed(RegimeDetector(4, trending_er=0.5, choppy_er=0.21), closes)[-1] is Regime.CHOPPY


def test_s12_window_slides():
    """SPEC S-12: only the last n changes count — a trend followed by chop turns CHOPPY."""
    det = RegimeDetector(period=10)
    feed(det, [float(i) for i in range(30)])
    assert det.regime is Regime.TRENDING
    feed(det, [29.0 + (i % 2) for i in range(1, 11)])
    assert det.regime is Regime.CHOPPY


def test_s12_er_matches_direct_recomputation_on_real_btc(btc_closes):
    """SPEC S-12: the incremental ER equals the textbook formula on every real BTC 5m candle."""
    for n in (20, 7):
        det = RegimeDetector(period=n)
        for t, close in enumerate(btc_closes):
            det.update(close)
            if t >= n:
                assert det.efficiency_ratio == pytest.approx(direct_er(btc_closes, t, n), abs=1e-9), t


def test_s12_running_sum_is_resynced_against_drift():
    """SPEC S-12: after a huge spike leaves the window the tiny moves still give the right ER
    (a running sum never resynced keeps a rounding residue of the spike)."""
    closes = [1.0, 1e15, 1.0] + [1.0 + 0.001 * (i % 3) for i in range(40)]
    det = RegimeDetector(period=5, trending_er=0.99, choppy_er=0.0)
    for t, close in enumerate(closes):
        det.update(close)
        if t >= 5:
            assert det.efficiency_ratio == pytest.approx(direct_er(closes, t, 5), abs=1e-9), t


def test_s12_real_week_of_btc_shows_all_three_regimes(btc_closes):
    """SPEC S-12: a real week of BTC 5m (defaults 20 / 0.35 / 0.15) is a mix of all regimes."""
    det = RegimeDetector()
    out = [r for r in feed(det, btc_closes[:WEEK_5M]) if r is not None]
    counts = {regime: out.count(regime) for regime in Regime}
    assert all(count >= 100 for count in counts.values()), counts


def test_s12_rejects_bad_parameters():
    """SPEC S-12: a bad period or threshold order is a ConfigError, not a silent misclassifier."""
    for kwargs in ({"period": 0}, {"period": 2.5}, {"trending_er": 0.1, "choppy_er": 0.2}):
        with pytest.raises(ConfigError):
            RegimeDetector(**kwargs)
