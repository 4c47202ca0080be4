"""Exchange precision (SPEC O-1) through ccxt's own decimal_to_precision (TICK_SIZE mode).

Quantities are truncated to the step size, prices floored to the tick size; the minimum notional
is checked after rounding. Money stays Decimal.

ccxt's ``decimal_to_precision`` is a self-contained module (standard library only), but
importing it the usual way runs the ``ccxt`` package's ``__init__``, which loads every exchange
class (about a second). A backtest needs only the rounding, so :func:`_ccxt_precision` loads that
one file from the installed ccxt without the package (the same code, ccxt's own), or takes the
already imported module when ccxt is loaded anyway (demo, live).
"""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

from trading.domain.errors import PrecisionError
from trading.domain.models import Market


def _ccxt_precision() -> ModuleType:
    """ccxt's ``ccxt/base/decimal_to_precision.py`` as a module, without importing ccxt."""
    loaded = sys.modules.get("ccxt.base.decimal_to_precision")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("ccxt")  # finds the package; does not run its __init__
    if spec is None or spec.origin is None:
        raise ImportError("ccxt is not installed (pip install the project)")
    path = Path(spec.origin).parent / "base" / "decimal_to_precision.py"
    file_spec = importlib.util.spec_from_file_location("_ccxt_decimal_to_precision", path)
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_D2P = _ccxt_precision()
TICK_SIZE, TRUNCATE, ROUND = _D2P.TICK_SIZE, _D2P.TRUNCATE, _D2P.ROUND
decimal_to_precision = _D2P.decimal_to_precision

MIN_NOTIONAL_FLOOR = Decimal(5)  # SPEC F-5: never below 5 quote whatever the exchange says


def floor_amount(market: Market, contracts: Decimal) -> Decimal:
    """Truncate a quantity in contracts to the market's step size (ccxt TRUNCATE, TICK_SIZE)."""
    if contracts <= 0:
        return Decimal(0)
    text = decimal_to_precision(str(contracts), TRUNCATE, str(market.step_size), TICK_SIZE)
    return Decimal(text)


def floor_price(market: Market, price: Decimal) -> Decimal:
    """Floor a price in quote to the market's tick size (ccxt TRUNCATE, TICK_SIZE)."""
    text = decimal_to_precision(str(price), TRUNCATE, str(market.tick_size), TICK_SIZE)
    return Decimal(text)


def min_notional(market: Market) -> Decimal:
    """The smallest order notional allowed, in quote: max(exchange MIN_NOTIONAL, 5) (SPEC F-5)."""
    return max(market.min_notional, MIN_NOTIONAL_FLOOR)


def check_order_size(market: Market, contracts: Decimal, price: Decimal) -> None:
    """Check a rounded entry size against the exchange limits (SPEC O-1, F-5).

    Args:
        contracts: quantity already floored to the step size.
        price: expected fill price in quote.

    Raises:
        PrecisionError: quantity below min_qty, or notional below :func:`min_notional`.
    """
    if contracts < market.min_qty or contracts <= 0:
        raise PrecisionError(market.symbol, "amount", contracts, market.min_qty)
    notional = contracts * market.contract_size * price
    floor = min_notional(market)
    if notional < floor:
        raise PrecisionError(market.symbol, "notional", notional.quantize(Decimal("0.01")), floor)


def round_price(market: Market, price: Decimal) -> Decimal:
    """Round a fill price in quote to the nearest tick (ccxt ROUND, TICK_SIZE)."""
    text = decimal_to_precision(str(price), ROUND, str(market.tick_size), TICK_SIZE)
    return Decimal(text)
