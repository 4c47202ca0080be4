"""The demo record behind the live promotion gate (SPEC S-7), read from the database.

A closed position is a demo trade when its entry order — whose client order id derives from the
environment, bot, symbol, side and the position's intent id (SPEC O-2) — was filled under the
``demo`` environment. Positions adopted by a reconciliation have no such entry and never count.
"""

from __future__ import annotations

from typing import Any

from trading.domain.models import OrderLeg, OrderStatus
from trading.domain.oms import legacy_client_order_id, make_client_order_id
from trading.domain.promotion import GateResult, promotion_gate


async def demo_gate(store: Any) -> GateResult:
    """The S-7 gate on ``store`` (a ``storage.Storage``): its closed demo trades and its open
    monitor incidents."""
    filled = {o.client_order_id for o in await store.orders.list_closed()
              if o.leg is OrderLeg.ENTRY and (o.status is OrderStatus.CLOSED or o.filled > 0)}
    nets = [
        p.net_pnl for p in await store.positions.list_closed()
        if any(make("demo", p.bot, p.symbol, p.side, p.position_id, OrderLeg.ENTRY.value) in filled
               for make in (make_client_order_id, legacy_client_order_id))  # ids before issue 18 count too
    ]
    incidents = [row.kind for row in (await store.incidents.list_open()).values()]
    return promotion_gate(nets, incidents)
