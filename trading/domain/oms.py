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
ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")  # OKX clOrdId / algoClOrdId; Binance's rule is wider
BOT_TAG_LEN = 6
DIGEST_LEN = 16
PREFIX_LEN = 3 + BOT_TAG_LEN  # "of" + env tag + bot tag
LEG_AT = PREFIX_LEN + DIGEST_LEN  # where the leg tag starts (≤ 5 characters, ids ≤ 30)


def bot_tag(bot: str) -> str:
    """Six letters and digits naming ``bot`` in its client order ids: the first three of its
    name (padded with ``x``) and three hex digits of its sha1, so two bots whose names start
    alike ("OptiScalp A" / "OptiScalp B") still get different prefixes (SPEC O-2, O-5, B-1)."""
    head = (_SLUG.sub("", bot)[:3] + "xxx")[:3]
    return head + hashlib.sha1(bot.encode()).hexdigest()[:3]


def client_order_id_prefix(env: str, bot: str) -> str:
    """The prefix every order of this bot carries, used to find its stray orders (SPEC O-5):
    ``of`` + env tag + :func:`bot_tag`, a fixed 9 characters (no bot's prefix starts another's)."""
    return f"of{ENV_TAGS.get(env, 'x')}{bot_tag(bot)}"


def legacy_client_order_id_prefix(env: str, bot: str) -> str:
    """The prefix of the ids issued before issue 18 (``ofd<bot6>-…``, with dashes OKX refuses):
    still recognised, so orders placed by an older version are found (O-5) and counted (S-7)."""
    return f"of{ENV_TAGS.get(env, 'x')}{_SLUG.sub('', bot)[:6]}-"


def client_order_id_prefixes(env: str, bot: str) -> tuple[str, str]:
    """Both prefixes of ``bot``'s orders (current first, then the pre-issue-18 one)."""
    return client_order_id_prefix(env, bot), legacy_client_order_id_prefix(env, bot)


def _digest(env: str, bot: str, symbol: str, side: Side, intent_id: str, leg: str) -> str:
    return hashlib.sha1(f"{env}|{bot}|{symbol}|{side.value}|{intent_id}|{leg}".encode()).hexdigest()[:DIGEST_LEN]


def make_client_order_id(env: str, bot: str, symbol: str, side: Side, intent_id: str, leg: str) -> str:
    """Deterministic client order id from the intent (SPEC O-2): the same intent and leg always
    give the same id, so a retry can never create a second order.

    Layout (letters and digits only, at most 30 characters — valid as an OKX ``clOrdId`` /
    ``algoClOrdId``, ``^[A-Za-z0-9]{1,32}$``, and as a Binance ``newClientOrderId`` /
    ``clientAlgoId``): ``of`` + env tag (1) + :func:`bot_tag` (6) + 16 hex digits of the intent's
    sha1 + the leg tag (``leg`` without punctuation, at most 5: ``entry``, ``sl``, ``sl1`` for the
    first replaced stop, ``tp1``, ``tp12``, ``close``). The leg tag starts at a fixed position
    (:data:`LEG_AT`), which is how :func:`leg_of` reads it back. ``leg`` may carry a generation
    suffix for replaced brackets (``sl.1``).
    """
    leg_tag = _SLUG.sub("", leg)[:5]
    return f"{client_order_id_prefix(env, bot)}{_digest(env, bot, symbol, side, intent_id, leg)}{leg_tag}"


def legacy_client_order_id(env: str, bot: str, symbol: str, side: Side, intent_id: str, leg: str) -> str:
    """The id the same intent had before issue 18 (``ofd<bot6>-<16 hex>-<leg5>``); used only to
    recognise orders an older version placed (SPEC S-7 counts their demo trades)."""
    leg_tag = _SLUG.sub("", leg)[:5]
    return f"{legacy_client_order_id_prefix(env, bot)}{_digest(env, bot, symbol, side, intent_id, leg)}-{leg_tag}"


def regenerated_client_order_id(client_order_id: str) -> str | None:
    """The next generation of one of our current-layout ids (SPEC O-2): the same prefix and leg
    tag (:func:`leg_of` reads the same leg), 16 other hex digits derived from the id itself — so
    it is deterministic (a retry of the same re-send reuses it) and never the id it comes from.
    Used when a venue will never accept the id again (OKX refuses an id used at any time before,
    51016) and nothing works under it. None for an id of another layout (pre-issue-18 or not ours)."""
    if not (client_order_id.startswith("of") and ID_RE.match(client_order_id) and len(client_order_id) > LEG_AT):
        return None
    digest = hashlib.sha1(f"{client_order_id}|next".encode()).hexdigest()[:DIGEST_LEN]
    return f"{client_order_id[:PREFIX_LEN]}{digest}{client_order_id[LEG_AT:]}"


_LEG_TAGS = sorted(((leg.value.replace(".", "")[:5], leg) for leg in OrderLeg), key=lambda kv: -len(kv[0]))


def leg_of(client_order_id: str) -> OrderLeg:
    """The order leg encoded in one of our client order ids (SPEC O-2): the tag at
    :data:`LEG_AT` (``sl1`` → stop-loss, ``tp12`` → TP1), or after the last ``-`` of a
    pre-issue-18 id; ENTRY for an id that is not ours."""
    if "-" in client_order_id:
        tag = client_order_id.rsplit("-", 1)[-1]
    elif client_order_id.startswith("of") and len(client_order_id) > LEG_AT:
        tag = client_order_id[LEG_AT:]
    else:
        return OrderLeg.ENTRY
    for key, leg in _LEG_TAGS:
        if tag.startswith(key):
            return leg
    return OrderLeg.ENTRY


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
