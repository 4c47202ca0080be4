"""Order building for the OMS: deterministic client order ids (SPEC O-2) and bracket orders
(SPEC O-3) at exchange precision (SPEC O-1)."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal

from trading.domain.models import Market, Order, OrderLeg, OrderType, Side
from trading.domain.precision import floor_price

_SLUG = re.compile(r"[^A-Za-z0-9]")
ENV_TAGS = {"paper": "p", "demo": "d", "live": "l"}


def client_order_id_prefix(env: str, bot: str) -> str:
    """The prefix every order of this bot carries, used to find its stray orders (SPEC O-5)."""
    return f"of{ENV_TAGS.get(env, 'x')}{_SLUG.sub('', bot)[:6]}-"


def make_client_order_id(env: str, bot: str, symbol: str, side: Side, intent_id: str, leg: str) -> str:
    """Deterministic client order id from the intent (SPEC O-2): the same intent and leg always
    give the same id, so a retry can never create a second order.

    ``leg`` may carry a generation suffix for replaced brackets (``sl.1``). The result matches
    Binance's ``newClientOrderId`` rule ``^[.A-Z:/a-z0-9_-]{1,36}$`` (≤ 36 characters).
    """
    digest = hashlib.sha1(f"{env}|{bot}|{symbol}|{side.value}|{intent_id}|{leg}".encode()).hexdigest()
    leg_tag = _SLUG.sub("", leg)[:5]
    return f"{client_order_id_prefix(env, bot)}{digest[:16]}-{leg_tag}"


def entry_order(
    *, env: str, bot: str, symbol: str, side: Side, intent_id: str, contracts: Decimal, now_ms: int,
    limit_price: Decimal | None = None,
) -> Order:
    """The entry order (SPEC O-3) for ``contracts`` (already at step size): market, or a limit
    at ``limit_price`` (quote, already at tick size) when one is given."""
    return Order(
        client_order_id=make_client_order_id(env, bot, symbol, side, intent_id, OrderLeg.ENTRY.value),
        bot=bot,
        symbol=symbol,
        side=side.entry_order_side,
        type=OrderType.MARKET if limit_price is None else OrderType.LIMIT,
        leg=OrderLeg.ENTRY,
        amount=contracts,
        reduce_only=False,
        created_ms=now_ms,
        price=limit_price,
    )


def limit_entry_price(market: Market, side: Side, close: Decimal, offset_pct: Decimal) -> Decimal:
    """SPEC O-3 limit entry: ``offset_pct`` % better than the signal candle's ``close`` (quote)
    — below it for a long, above for a short — floored to the tick size (O-1)."""
    offset = close * offset_pct / 100
    return floor_price(market, close - offset if side is Side.LONG else close + offset)


def bracket_order(
    *,
    env: str,
    bot: str,
    market: Market,
    side: Side,
    intent_id: str,
    leg: OrderLeg,
    generation: int,
    contracts: Decimal,
    trigger_price: Decimal,
    now_ms: int,
    tp_order_style: str = "market",
) -> Order:
    """A reduce-only bracket (SPEC O-3): STOP_MARKET for the stop-loss; for TP1/TP2/TP3
    TAKE_PROFIT_MARKET, or TAKE_PROFIT (a limit at the trigger price) when ``tp_order_style``
    is "limit"; trigger floored to the tick size. ``generation`` > 0 marks a replacement after
    the position size changed (brackets follow the position)."""
    if leg is OrderLeg.STOP_LOSS:
        order_type = OrderType.STOP_MARKET
    else:
        order_type = OrderType.TAKE_PROFIT if tp_order_style == "limit" else OrderType.TAKE_PROFIT_MARKET
    leg_key = leg.value if generation == 0 else f"{leg.value}.{generation}"
    return Order(
        client_order_id=make_client_order_id(env, bot, market.symbol, side, intent_id, leg_key),
        bot=bot,
        symbol=market.symbol,
        side=side.exit_order_side,
        type=order_type,
        leg=leg,
        amount=contracts,
        reduce_only=True,
        created_ms=now_ms,
        trigger_price=floor_price(market, trigger_price),
    )


def close_order(
    *, env: str, bot: str, symbol: str, side: Side, intent_id: str, contracts: Decimal, now_ms: int
) -> Order:
    """A reduce-only market order closing ``contracts`` of a ``side`` position."""
    return Order(
        client_order_id=make_client_order_id(env, bot, symbol, side, intent_id, OrderLeg.CLOSE.value),
        bot=bot,
        symbol=symbol,
        side=side.exit_order_side,
        type=OrderType.MARKET,
        leg=OrderLeg.CLOSE,
        amount=contracts,
        reduce_only=True,
        created_ms=now_ms,
    )
