"""Binance USDⓈ-M maintenance-margin brackets from the bundled leverage tiers
(``data/markets/binance_leverage_tiers.freqtrade.json.gz``: ccxt ``fetch_leverage_tiers``
entries per unified symbol, see ``data/README.md``), for liquidation prices in paper mode.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from trading.domain.liquidation import MarginBracket, brackets_from_ccxt_tiers

TIERS_FILE = "binance_leverage_tiers.freqtrade.json.gz"


@lru_cache(maxsize=4)
def _load(path: Path) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def load_margin_brackets(data_dir: Path, symbols: Iterable[str]) -> dict[str, tuple[MarginBracket, ...]]:
    """Brackets of each of ``symbols`` listed in the bundled tiers (a symbol without tiers, or a
    missing file, is left out: its liquidation price is then unknown, never guessed)."""
    path = Path(data_dir) / "markets" / TIERS_FILE
    if not path.is_file():
        return {}
    raw = _load(path)
    out = {}
    for symbol in symbols:
        tiers = raw.get(symbol)
        if tiers:
            out[symbol] = brackets_from_ccxt_tiers(tiers)
    return out
