"""Shared pieces of the issue-13 tests against the strict fake Binance: one simulated clock that
is both the bot's clock and the exchange's server time, the gateway's sleep moving it, and a
demo runtime built on it (real ccxt client, real SQLite)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bot.runtime import Runtime, build_exchange_runtime
from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.domain.config import TradingConfig
from trading.domain.models import Side
from trading.domain.oms import client_order_id_prefix
from trading.ports import ReplayClock

XRP = "XRP/USDT:USDT"
PREFIX = client_order_id_prefix("demo", "xrp")


class SimClock(ReplayClock):
    """The test's time: the bot's clock, the exchange's server time and the gateway's sleep."""

    async def sleep(self, seconds: float) -> None:
        """Advance instead of waiting."""
        self.current_ms += int(seconds * 1000)


def bind(fake: FakeBinance, start_ms: int = 1_750_000_000_000) -> SimClock:
    """A SimClock that is also ``fake``'s server time."""
    clock = SimClock(start_ms)
    fake.wall_ms = clock.now_ms
    return clock


def xrp_config(symbol: str = XRP, quote: str = "USDT") -> TradingConfig:
    """One bot "xrp" on ``symbol`` (1m candles), quote ``quote``."""
    base = TradingConfig()
    bot = base.bots[0].model_copy(update={"name": "xrp", "symbols": (symbol,), "timeframe": "1m"})
    account = base.account.model_copy(update={"quote": quote})
    return base.model_copy(update={"bots": (bot,), "account": account})


def adapter_for(fake: FakeBinance, *, quote: str = "USDT", timeout_ms: int = 200) -> CcxtExchange:
    """The real ccxt adapter (demo mode) pointed at ``fake``."""
    return CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=fake.base_url,
                        timeout_ms=timeout_ms, rate_limit_ms=1, quote=quote)


async def build(fake: FakeBinance, db: Path, clock: SimClock, *, symbol: str = XRP, quote: str = "USDT",
                canary: bool = False, **kwargs) -> Runtime:
    """A demo runtime on ``fake`` (the canary off unless asked: most tests count requests)."""
    return await build_exchange_runtime(config=xrp_config(symbol, quote), db_path=db,
                                        exchange=adapter_for(fake, quote=quote), env="demo", clock=clock,
                                        sleep=clock.sleep, canary=canary, **kwargs)


async def step(rt: Runtime, clock: SimClock, ms: int = 500) -> None:
    """One pass of the live loop ``ms`` later (fills, stop checks, venue guard)."""
    clock.current_ms += ms
    await rt.tick(clock.now_ms())


async def open_long(rt: Runtime, clock: SimClock, contracts: str = "10", symbol: str = XRP) -> None:
    """A market long (it fills at once) booked by the next pass, which places its brackets. The
    order gate values it at the exchange's last price (no candle is fed here, and the gate
    refuses an entry it cannot value: MISSING_DATA, O-9)."""
    await rt.engine.submit_entry("xrp", symbol, Side.LONG, Decimal(contracts),
                                 price=await rt.exchange.fetch_last_price(symbol))
    await step(rt, clock)


def working_stops(fake: FakeBinance, symbol: str = XRP) -> list:
    """Our STOP_MARKET orders still working on the exchange (waiting, or triggered and executing)."""
    return [a for a in fake.venue.algos.values() if a.symbol == symbol and a.order_type == "STOP_MARKET"
            and a.client_id.startswith(PREFIX) and a.status in ("NEW", "TRIGGERING", "TRIGGERED")]


def record_alerts(rt: Runtime, with_unheard: bool = False) -> list:
    """Every Alert the engine (and its venue guard) emits from now on, as the persister writes
    them (every pass of :func:`step` flushes): a listener beside the notifier's, so no part of
    the split engine, whatever sink reference it holds, can emit one unseen. ``with_unheard``:
    also those of the start-up reconciliation (handed over by the next flush), as the notifier
    gets them."""
    from trading.domain.events import Alert

    alerts: list = []

    async def note(events) -> None:
        alerts.extend(event for event in events if isinstance(event, Alert))

    rt.persister.add_listener(note, with_unheard=with_unheard)
    return alerts
