"""Exchange precision (SPEC O-1) through ccxt's own decimal_to_precision (TICK_SIZE mode).

Quantities are truncated to the step size, prices floored to the tick size; the minimum notional
is checked after rounding. Money stays Decimal.
"""

from __future__ import annotations

from decimal import Decimal

from ccxt.base.decimal_to_precision import TICK_SIZE, TRUNCATE, decimal_to_precision

from trading.domain.errors import PrecisionError
from trading.domain.models import Market

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
    from ccxt.base.decimal_to_precision import ROUND

    text = decimal_to_precision(str(price), ROUND, str(market.tick_size), TICK_SIZE)
    return Decimal(text)
