"""OKX v5 specifics of the ccxt adapter (SPEC S-3, O-2, O-3, O-7; issue 18), as pure functions
``trading.adapters.ccxt_exchange.CcxtExchange`` calls when its exchange is ``okx``.

What OKX wants, from its v5 API docs and ccxt's ``okx.py`` (ccxt ≥ 4.5):

- amounts are contracts (``sz``); a contract is ``ctVal`` of the base coin (ccxt's
  ``contractSize``): notional = contracts × ctVal × price (S-3);
- every order names its margin mode (``tdMode`` ``isolated`` / ``cross``); leverage is set per
  instrument and margin mode (``/account/set-leverage`` with ``mgnMode``; ``posSide`` ``net`` in
  isolated); the account must be in net (one-way) position mode;
- client ids (``clOrdId``, ``algoClOrdId``) are letters and digits, at most 32 (O-2);
- market and limit orders go to ``/trade/batch-orders`` (ccxt's default) under ``clOrdId``;
  stop-losses and take-profits are algo orders (``/trade/order-algo``, ``ordType``
  ``conditional``) under ``algoClOrdId``: ``slTriggerPx`` with ``slOrdPx`` -1 (a market fill),
  ``tpTriggerPx`` with ``tpOrdPx`` -1 or the limit price, the trigger price type ``mark`` or
  ``last`` (the config's ``stop_working_type`` MARK_PRICE / CONTRACT_PRICE); they are looked up
  (``/trade/order-algo?algoClOrdId=``), listed (``/trade/orders-algo-pending?ordType=conditional``)
  and cancelled (``/trade/cancel-algos`` with ``algoClOrdId``) by that id. No Binance parameter
  (``workingType``, ``priceProtect``, ``timeInForce``) goes into an OKX body;
- an algo order is ``live`` until it triggers, then ``effective`` (it placed the order ``ordId``,
  whose fills are the stop's), ``canceled``, or ``order_failed`` (it triggered and the order it
  tried to place was refused: the stop is dead, R-10).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from trading.domain.models import Order, OrderStatus, OrderType

TRIGGER_TYPES = {"MARK_PRICE": "mark", "CONTRACT_PRICE": "last"}  # SPEC O-3 workingType → OKX triggerPxType
ALGO_ORD_TYPE = "conditional"
ALGO_OPEN = ("live", "partially_effective")
ALGO_DEAD = {"canceled": OrderStatus.CANCELED, "order_failed": OrderStatus.REJECTED}
MARGIN_MODES = ("isolated", "cross")


def trigger_type(stop_working_type: str) -> str:
    """OKX's ``slTriggerPxType`` / ``tpTriggerPxType`` for the config's ``stop_working_type``:
    MARK_PRICE → ``mark``, CONTRACT_PRICE → ``last`` (SPEC O-3)."""
    try:
        return TRIGGER_TYPES[stop_working_type]
    except KeyError:
        raise ValueError(f"stop_working_type {stop_working_type!r} is not MARK_PRICE or CONTRACT_PRICE") from None


def order_request(order: Order, *, amount: str, price: str | None, trigger: str | None, margin_mode: str,
                  stop_working_type: str) -> tuple[str, str | None, dict[str, Any]]:
    """The ccxt ``create_order`` arguments (type, price, params) for ``order`` on OKX.

    Args:
        order: our order (SPEC O-2 client id, O-3 type); amount: contracts at step size (ccxt's
            ``amount_to_precision``); price: the limit in quote at tick size (LIMIT, TAKE_PROFIT)
            or None; trigger: the trigger price in quote at tick size (conditional orders) or
            None; margin_mode: ``isolated`` or ``cross`` (``tdMode``); stop_working_type: the
            config's MARK_PRICE / CONTRACT_PRICE.
    Returns:
        ``(type, price, params)``: plain orders carry ``clientOrderId`` (→ ``clOrdId``); algo
        orders carry ``algoClOrdId`` and ``stopLossPrice`` / ``takeProfitPrice`` with their
        trigger price type, so ccxt builds ``ordType`` conditional with ``slOrdPx`` / ``tpOrdPx``
        -1 (market) or the limit.
    """
    if margin_mode not in MARGIN_MODES:
        raise ValueError(f"margin mode {margin_mode!r} is not isolated or cross")
    params: dict[str, Any] = {"tdMode": margin_mode}
    if order.reduce_only:
        params["reduceOnly"] = True
    if order.type is OrderType.MARKET:
        params["clientOrderId"] = order.client_order_id
        return "market", None, params
    if order.type is OrderType.LIMIT:
        params["clientOrderId"] = order.client_order_id
        return "limit", price, params
    assert trigger is not None
    params["algoClOrdId"] = order.client_order_id
    kind = trigger_type(stop_working_type)
    if order.type is OrderType.STOP_MARKET:
        params.update(stopLossPrice=trigger, slTriggerPxType=kind)
        return "market", None, params
    params.update(takeProfitPrice=trigger, tpTriggerPxType=kind)
    if order.type is OrderType.TAKE_PROFIT:  # O-3 tp_order_style "limit": the limit is the target
        return "limit", trigger, params
    return "market", None, params


def client_order_id(raw: dict) -> str:
    """Our client order id of a ccxt order dict from OKX: ``algoClOrdId`` for algo orders
    (ccxt reads only ``clOrdId``, which on an algo order is not ours), else ``clOrdId``."""
    info = raw.get("info") or {}
    return str(info.get("algoClOrdId") or raw.get("clientOrderId") or info.get("clOrdId") or "")


def is_algo(raw: dict) -> bool:
    """True for an OKX algo (conditional) order."""
    info = raw.get("info") or {}
    return bool(info.get("algoId")) or info.get("ordType") in (ALGO_ORD_TYPE, "trigger", "oco")


def order_type(raw: dict) -> OrderType:
    """Our order type of an OKX order: a conditional with ``slTriggerPx`` is STOP_MARKET, with
    ``tpTriggerPx`` TAKE_PROFIT_MARKET (``tpOrdPx`` -1) or TAKE_PROFIT; else MARKET / LIMIT."""
    info = raw.get("info") or {}
    if info.get("slTriggerPx"):
        return OrderType.STOP_MARKET
    if info.get("tpTriggerPx"):
        return OrderType.TAKE_PROFIT_MARKET if str(info.get("tpOrdPx")) in ("-1", "") else OrderType.TAKE_PROFIT
    return OrderType.LIMIT if info.get("ordType") in ("limit", "post_only", "fok", "ioc") else OrderType.MARKET


def trigger_price(raw: dict) -> Decimal | None:
    """The trigger price (quote) of an OKX algo order, None for other orders."""
    info = raw.get("info") or {}
    value = info.get("slTriggerPx") or info.get("tpTriggerPx") or info.get("triggerPx")
    return Decimal(str(value)) if value not in (None, "") else None


def algo_state(raw: dict) -> tuple[str, str]:
    """``(state, ordId)`` of an OKX algo order: ``live`` / ``effective`` / ``canceled`` /
    ``order_failed`` / ``partially_effective``, and the order it placed once triggered ("" before;
    ``ordIdList`` where OKX gives only the list)."""
    info = raw.get("info") or {}
    placed = str(info.get("ordId") or "")
    if not placed and info.get("ordIdList"):
        placed = str(info["ordIdList"][0])
    return str(info.get("state") or ""), placed


def wallet_balance(balance: dict, quote: str) -> Decimal:
    """The quote coin's cash balance (``cashBal``: realised PnL, fees and funding in, unrealised
    PnL out) from ccxt's ``fetch_balance`` on OKX — what ``ExchangePort.fetch_balance`` means.
    ccxt's ``total`` is OKX's ``eq`` (equity, with the unrealised PnL the engine adds itself)."""
    for account in (balance.get("info") or {}).get("data") or []:
        for detail in account.get("details") or []:
            if detail.get("ccy") == quote and detail.get("cashBal") not in (None, ""):
                return Decimal(str(detail["cashBal"]))
    return Decimal(0)


def key_permissions(config: dict) -> dict[str, bool]:
    """What an OKX key may do, from ``/account/config`` (``perm``: ``read_only``, ``trade``,
    ``withdraw``) and whether the account can hold swaps at all (``acctLv`` 1 is spot mode:
    every swap order would fail with 51010). Keys: ``read``, ``futures``, ``withdrawals``."""
    perm = {p.strip() for p in str(config.get("perm") or "").split(",") if p.strip()}
    level = str(config.get("acctLv") or "")
    return {"read": "read_only" in perm or bool(perm), "futures": "trade" in perm and level not in ("", "1"),
            "withdrawals": "withdraw" in perm}
