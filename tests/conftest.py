"""Shared fixtures: the bundled REAL market rules and candles (data/, see data/README.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Parsed candle files are cached (trading.adapters.marketdata.cache_dir): the tests, and the
# processes they start, use a cache of their own instead of the user's.
os.environ.setdefault("OPTIFLOW_CACHE_DIR", tempfile.mkdtemp(prefix="optiflow-test-cache-"))

from trading.adapters.marketdata import default_data_dir, load_ccxt_markets, market_from_ccxt
from trading.domain.models import Market

DATA_DIR = default_data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The project's bundled data folder."""
    return DATA_DIR


@pytest.fixture(scope="session")
def markets() -> dict[str, Market]:
    """Real Binance USDⓈ-M market rules of the bundled symbols."""
    raw = load_ccxt_markets(DATA_DIR)
    symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT", "1000000MOG/USDT:USDT"]
    return {s: market_from_ccxt(raw[s]) for s in symbols}
