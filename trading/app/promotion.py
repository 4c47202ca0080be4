"""The demo record behind the live promotion gate (SPEC S-7), read from the database.

A closed position is a demo trade when its entry order — whose client order id derives from the
environment, bot, symbol, side and the position's intent id (SPEC O-2) — was filled under the
``demo`` environment. Positions adopted by a reconciliation have no such entry and never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from trading.domain.models import OrderLeg, TradeResult
from trading.domain.oms import client_order_id_prefixes, legacy_client_order_id, make_client_order_id
from trading.domain.promotion import GateResult, promotion_gate


async def demo_trade_nets(store: Any, trades: Sequence[TradeResult] | None = None) -> list[Decimal]:
    """Net PnL (quote) of each closed demo trade in ``store`` (a ``storage.Storage``), oldest
    close first (SPEC S-7); ``trades``: its closed trades when the caller already read them."""
    filled = await store.orders.filled_entry_ids()
    if not filled:
        return []
    entry = OrderLeg.ENTRY.value
    nets, demo_bots = [], {}
    for trade in trades if trades is not None else await store.positions.closed_results():
        has_demo = demo_bots.get(trade.bot)
        if has_demo is None:  # no demo entry of this bot at all: none of its ids need hashing
            prefixes = client_order_id_prefixes("demo", trade.bot)  # ids before issue 18 count too
            has_demo = demo_bots[trade.bot] = any(cid.startswith(prefixes) for cid in filled)
        if has_demo and any(make("demo", trade.bot, trade.symbol, trade.side, trade.position_id, entry) in filled
                            for make in (make_client_order_id, legacy_client_order_id)):
            nets.append(trade.net_pnl)
    return nets


async def demo_gate(store: Any, nets: Sequence[Decimal] | None = None) -> GateResult:
    """The S-7 gate on ``store`` (a ``storage.Storage``): its closed demo trades (``nets``
    when the caller already holds them, from :func:`demo_trade_nets`) and its open monitor
    incidents."""
    if nets is None:
        nets = await demo_trade_nets(store)
    incidents = [row.kind for row in (await store.incidents.list_open()).values()]
    return promotion_gate(nets, incidents)
