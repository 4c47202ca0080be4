"""Simulated exchange semantics (paper mode, SPEC S-1, S-3, O-2, O-3) on real market rules."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from trading.domain.errors import OrderNotFound, OrderRejected
from trading.domain.models import Order, OrderLeg, OrderSide, OrderStatus, OrderType
from trading.ports import ReplayClock
from trading.adapters.simulated import SimulatedExchange

SYMBOL = "XRP/USDT:USDT"


def order(cid, side, type_=OrderType.MARKET, leg=OrderLeg.ENTRY, amount="100", trigger=None, reduce_only=False):
    return Order(client_order_id=cid, bot="main", symbol=SYMBOL, side=side, type=type_, leg=leg,
                 amount=D(amount), reduce_only=reduce_only, created_ms=0,
                 trigger_price=None if trigger is None else D(trigger))


@pytest.fixture
def exchange(markets):
    return SimulatedExchange(markets, D(1000), D("0.02"), ReplayClock())


async def open_long(exchange, price=2.0):
    await exchange.set_leverage(SYMBOL, 5)
    await exchange.create_order(order("e1", OrderSide.BUY))
    (fill,) = exchange.fill_pending(SYMBOL, 60_000, price)
    return fill


async def test_market_order_fills_at_next_open_plus_slippage_with_taker_fee(exchange):
    """A buy fills at the next candle's open + 0.02 %, fee = taker 0.05 % of the notional."""
    fill = await open_long(exchange, 2.0)
    assert fill.price == D("2.0004")  # 2.0 × 1.0002, at XRP's 0.0001 tick
    assert fill.amount == D(100)
    notional = D(100) * D(1) * D("2.0004")  # contracts × contractSize × price (S-3)
    assert fill.fee == notional * D("0.0005")
    assert await exchange.fetch_balance() == D(1000) - fill.fee
    assert SYMBOL not in exchange.active_symbols or exchange.position(SYMBOL) is not None


async def test_nothing_fills_before_the_next_candle(exchange):
    await exchange.create_order(order("e1", OrderSide.BUY))
    assert exchange.next_trigger(SYMBOL, 0, 2.0, 2.1, 1.9) is None
    assert exchange.position(SYMBOL) is None


async def test_stop_first_when_one_candle_touches_both(exchange):
    """SPEC (issue 2 §4): stop and take-profit touched in one candle → the stop fills."""
    await open_long(exchange, 2.0)
    await exchange.create_order(order("tp", OrderSide.SELL, OrderType.TAKE_PROFIT_MARKET, OrderLeg.TP2, trigger="2.02", reduce_only=True))
    await exchange.create_order(order("sl", OrderSide.SELL, OrderType.STOP_MARKET, OrderLeg.STOP_LOSS, trigger="1.98", reduce_only=True))
    fill = exchange.next_trigger(SYMBOL, 120_000, 2.0, 2.05, 1.95)
    assert fill.client_order_id == "sl"
    assert fill.price == D("1.9796")  # trigger 1.98 − 0.02 % slippage, at tick
    # The position is flat now: the take-profit can no longer reduce anything.
    assert exchange.next_trigger(SYMBOL, 120_000, 2.0, 2.05, 1.95) is None
    (tp,) = [o for o in exchange._orders.values() if o.client_order_id == "tp"]
    assert tp.status is OrderStatus.REJECTED


async def test_stop_gapped_through_fills_at_the_open(exchange):
    """A candle opening below a long's stop fills at that (worse) open, not the trigger."""
    await open_long(exchange, 2.0)
    await exchange.create_order(order("sl", OrderSide.SELL, OrderType.STOP_MARKET, OrderLeg.STOP_LOSS, trigger="1.98", reduce_only=True))
    fill = exchange.next_trigger(SYMBOL, 120_000, 1.95, 1.96, 1.94)
    assert fill.price == D("1.9496")


async def test_take_profit_pnl_lands_in_the_balance(exchange):
    """Realised PnL = (exit − entry) × contracts × contractSize; fees on both legs."""
    entry = await open_long(exchange, 2.0)
    await exchange.create_order(order("tp", OrderSide.SELL, OrderType.TAKE_PROFIT_MARKET, OrderLeg.TP2, trigger="2.05", reduce_only=True))
    assert exchange.next_trigger(SYMBOL, 120_000, 2.0, 2.04, 1.99) is None
    exit_ = exchange.next_trigger(SYMBOL, 180_000, 2.04, 2.06, 2.03)
    assert exit_.price == D("2.0496")
    pnl = (exit_.price - entry.price) * D(100)
    assert await exchange.fetch_balance() == D(1000) + pnl - entry.fee - exit_.fee
    assert exchange.position(SYMBOL) is None


async def test_o3_take_profit_limit_fills_at_its_price_as_a_maker(exchange, markets):
    """O-3 ``tp_order_style = "limit"``: a TAKE_PROFIT is a limit at its trigger — it fills
    exactly there with the maker fee (no slippage), where TAKE_PROFIT_MARKET pays slippage and
    the taker fee; a candle opening beyond it fills at that (better) open as a taker."""
    await open_long(exchange, 2.0)
    await exchange.create_order(order("tp1", OrderSide.SELL, OrderType.TAKE_PROFIT, OrderLeg.TP1, amount="40",
                                      trigger="2.05", reduce_only=True))
    await exchange.create_order(order("tp2", OrderSide.SELL, OrderType.TAKE_PROFIT, OrderLeg.TP2, amount="60",
                                      trigger="2.08", reduce_only=True))
    market = markets[SYMBOL]
    assert market.maker_fee < market.taker_fee
    first = exchange.next_trigger(SYMBOL, 120_000, 2.04, 2.06, 2.03)
    assert (first.client_order_id, first.price) == ("tp1", D("2.05"))
    assert first.fee == D(40) * D("2.05") * market.maker_fee
    gapped = exchange.next_trigger(SYMBOL, 180_000, 2.10, 2.11, 2.09)  # opens above the 2.08 limit
    assert gapped.client_order_id == "tp2" and gapped.price == D("2.0996")  # the open − slippage, at tick
    assert gapped.fee == D(60) * D("2.0996") * market.taker_fee
    assert exchange.position(SYMBOL) is None


async def test_o3_limit_entry_rests_then_fills_at_its_price_as_a_maker(exchange, markets):
    """O-3 ``entry_order_style = "limit"``: a buy limit rests until a candle trades at or below
    its price, then fills exactly there with the maker fee — also when the candle opened below
    it (the price passed through the resting order between the candles)."""
    await exchange.set_leverage(SYMBOL, 5)
    await exchange.create_order(replace(order("e1", OrderSide.BUY, OrderType.LIMIT), price=D("1.9900")))
    assert exchange.fill_pending(SYMBOL, 60_000, 2.0) == []  # not a market order
    assert exchange.next_trigger(SYMBOL, 60_000, 2.0, 2.01, 1.995) is None  # low above the limit
    assert exchange.position(SYMBOL) is None
    fill = exchange.next_trigger(SYMBOL, 120_000, 1.98, 1.99, 1.97)  # opened below it
    assert (fill.client_order_id, fill.price) == ("e1", D("1.9900"))
    assert fill.fee == D(100) * D("1.9900") * markets[SYMBOL].maker_fee
    assert exchange.position(SYMBOL) == (D(100), D("1.9900"))


async def test_o3_limit_entry_without_a_price_is_rejected(exchange):
    with pytest.raises(OrderRejected, match="LIMIT needs a price"):
        await exchange.create_order(order("e1", OrderSide.BUY, OrderType.LIMIT))


async def test_funding_long_pays_positive_rate(exchange):
    """Funding: long pays notional × rate when the rate is positive."""
    await open_long(exchange, 2.0)
    before = await exchange.fetch_balance()
    paid = exchange.apply_funding(SYMBOL, D("0.0001"), 2.5, 1)
    assert paid == -(D(100) * D("2.5") * D("0.0001"))
    assert await exchange.fetch_balance() == before + paid
    assert exchange.apply_funding("BTC/USDT:USDT", D("0.0001"), 100000.0, 1) is None  # flat


async def test_o2_same_client_order_id_never_duplicates(exchange):
    """SPEC O-2: a retry with the same client order id returns the first order."""
    first = await exchange.create_order(order("same", OrderSide.BUY))
    again = await exchange.create_order(order("same", OrderSide.BUY, amount="999"))
    assert again == first
    assert len(exchange.fill_pending(SYMBOL, 60_000, 2.0)) == 1


async def test_reduce_only_without_position_is_rejected(exchange):
    """SPEC O-3 brackets are reduce-only: nothing to reduce → rejected with the reason."""
    with pytest.raises(OrderRejected, match="ReduceOnly"):
        await exchange.create_order(order("sl", OrderSide.SELL, OrderType.STOP_MARKET, OrderLeg.STOP_LOSS, trigger="1.9", reduce_only=True))


async def test_o9_cancel_unknown_or_filled_order_is_refused_like_binance(exchange):
    """O-9: the simulated venue answers as Binance does (-2011 "Unknown order sent." for an
    unknown order and for one no longer open; -2013 for a look-up of an unknown id)."""
    with pytest.raises(OrderNotFound, match="Unknown order"):
        await exchange.cancel_order("nope", SYMBOL)
    with pytest.raises(OrderNotFound, match="does not exist"):
        await exchange.fetch_order("nope", SYMBOL)


async def test_o3_reduce_only_close_expires_when_the_position_is_already_gone(exchange):
    """Two reduce-only market closes queued for one long: the first closes it, the second
    expires like on Binance instead of opening a short."""
    await open_long(exchange, 2.0)
    await exchange.create_order(order("c1", OrderSide.SELL, leg=OrderLeg.CLOSE, reduce_only=True))
    await exchange.create_order(order("c2", OrderSide.SELL, leg=OrderLeg.CLOSE, reduce_only=True))
    fills = exchange.fill_pending(SYMBOL, 120_000, 2.0)
    assert [f.client_order_id for f in fills] == ["c1"]
    assert exchange.position(SYMBOL) is None
    assert await exchange.fetch_open_orders(SYMBOL) == []
    assert exchange._orders["c2"].status is OrderStatus.REJECTED


async def test_o9_the_venue_reports_its_fills_like_an_exchange(exchange):
    """O-9: what the fill tracker reads from any venue — an order looked up by client order id
    carries what filled (amount, average, fee, time), open orders list only what rests, a
    filled order can no longer be cancelled, and every order the venue fills or rejects on its
    own is announced (the simulated user-data stream)."""
    announced: list[str] = []
    exchange.on_change = announced.append
    fill = await open_long(exchange, 2.0)
    assert announced == ["e1"]
    looked_up = await exchange.fetch_order("e1", SYMBOL)
    assert looked_up.status is OrderStatus.CLOSED and looked_up.filled == fill.amount
    assert (looked_up.average, looked_up.fee, looked_up.updated_ms) == (fill.price, fill.fee, fill.timestamp)
    with pytest.raises(OrderNotFound):
        await exchange.cancel_order("e1", SYMBOL)
    await exchange.create_order(order("sl", OrderSide.SELL, OrderType.STOP_MARKET, OrderLeg.STOP_LOSS, trigger="1.9",
                                      reduce_only=True))
    await exchange.create_order(order("x1", OrderSide.SELL, leg=OrderLeg.CLOSE, reduce_only=True))
    assert [o.client_order_id for o in await exchange.fetch_open_orders(SYMBOL)] == ["sl", "x1"]
    exchange.fill_pending(SYMBOL, 120_000, 2.0)  # the close fills at the open
    assert announced == ["e1", "x1"] and exchange.position(SYMBOL) is None
    assert exchange.next_trigger(SYMBOL, 180_000, 2.0, 2.0, 1.8) is None  # nothing left to reduce
    rejected = await exchange.fetch_order("sl", SYMBOL)
    assert rejected.status is OrderStatus.REJECTED and "ReduceOnly" in rejected.reason
    assert announced == ["e1", "x1", "sl"] and await exchange.fetch_open_orders() == []
    await exchange.set_margin_mode(SYMBOL, "cross")
    with pytest.raises(OrderRejected):
        await exchange.set_margin_mode(SYMBOL, "portfolio")
