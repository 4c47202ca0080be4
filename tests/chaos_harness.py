"""The chaos loop of the live order path, shared by every venue (issue 4, issue 13, issue 18; SPEC
O-2, O-4, O-5, O-6, O-8, R-10, L-3).

One loop (:class:`Chaos`, :func:`run_chaos`) drives the real runtime — ccxt client, order gateway,
engine, fill tracker, stop verifier, reconciler, venue guard, a real SQLite file — against a
strict loopback fake exchange through a :class:`ChaosVenue` driver: :class:`BinanceVenue`
(``tests.fake_binance``, with its market-data websocket) and :class:`OkxVenue`
(``tests.fake_okx``, REST polling). A driver says which faults its exchange can show and where,
and how to read the exchange's truth (positions, open and working orders, stops, ids accepted);
the steps, the invariants and the figures are the same for every venue. The test modules
(``tests/test_chaos_exchange.py``, ``tests/test_chaos_okx.py``) hold each venue's docstring,
what its run must have exercised, and the switches:

``CHAOS_SEED``, ``CHAOS_STEPS`` (Binance) / ``CHAOS_OKX_STEPS`` (OKX); ``CHAOS_DEBUG=<file>``
appends what the bot and the exchange held whenever an invariant breaks;
``CHAOS_TRACE_FROM=<step>`` (with ``CHAOS_TRACE_FILE``, ``CHAOS_TRACE_LEVEL``) logs every step
from there on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.runtime import Runtime, build_exchange_runtime
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.adapters.ws_feed import WEBSOCKET, HybridCandleFeed
from trading.domain.config import TradingConfig
from trading.domain.errors import ExchangeError
from trading.domain.models import Side
from trading.domain.oms import client_order_id_prefix
from trading.ports import ReplayClock

STEP_MS = 250
STOP_DEADLINE_MS = 2_000
SYMBOLS = ("XRP/USDT:USDT", "DOGE/USDT:USDT")
NOTIONAL = Decimal(12)
TIMEFRAME_MS = 60_000
BOT = "chaos"


class SimTime:
    """Simulated time shared by the bot's clock, the gateway's waits and the exchange's server
    clock."""

    def __init__(self) -> None:
        self.clock = ReplayClock(1_750_000_000_000)
        self.waited_ms = 0

    async def sleep(self, seconds: float) -> None:
        ms = int(seconds * 1000)
        self.clock.current_ms += ms
        self.waited_ms += ms


def chaos_config() -> TradingConfig:
    base = TradingConfig()
    # The strategy never enters (no score reaches 1000): the test sends its own entries, which the
    # order gate lets through (a paused symbol would refuse them too, O-9).
    strategy = base.bots[0].strategy.model_copy(update={"min_score": 1000.0})
    bot = base.bots[0].model_copy(update={"name": BOT, "symbols": SYMBOLS, "timeframe": "1m",
                                          "strategy": strategy})
    orders = base.orders.model_copy(update={"limit_entry_timeout_s": 20})  # limit entries expire within the run
    return base.model_copy(update={"bots": (bot,), "orders": orders})


# ---------------------------------------------------------------------------- venues
class ChaosVenue:
    """What the chaos loop needs from one fake exchange (see :class:`BinanceVenue`,
    :class:`OkxVenue`).

    ``fault_paths``: fault kind → the request paths (substrings) it may be armed on (``("",)``
    for faults that hit the next order or trigger, whatever the path); ``socket_faults``: the
    market-data socket faults (none where the venue is polled over REST); ``stray_id(n)``: the
    client id of the n-th stray of ours planted (valid on the venue, leg TP1)."""

    name = ""
    fault_paths: dict[str, tuple[str, ...]] = {}
    socket_faults: tuple[str, ...] = ()
    fake: Any

    async def start(self, time: SimTime) -> None:
        """Serve, with the exchange's server clock bound to the simulated time."""
        raise NotImplementedError

    async def stop(self) -> None:
        await self.fake.stop()

    def adapter(self) -> CcxtExchange:
        """A fresh ccxt adapter (demo) pointed at the fake (one per bot process)."""
        raise NotImplementedError

    def ws_client(self) -> Any | None:
        """A fresh market-data websocket client, or None (REST polling)."""
        return None

    def inject(self, kind: str, path: str, count: int, retry_after_s: int) -> None:
        raise NotImplementedError

    def clear_faults(self) -> None:
        self.fake.clear_faults()

    @property
    def faults_injected(self) -> Counter:
        return self.fake.faults_injected

    def advance(self) -> None:
        """The next real candle on every symbol."""
        self.fake.advance()

    def last(self, symbol: str) -> Decimal:
        raise NotImplementedError

    def set_mark_offset(self, symbol: str, offset: Decimal) -> None:
        raise NotImplementedError

    def close(self, symbol: str) -> float:
        """The current candle's close."""
        return self.fake.candle(symbol)[4]

    def position(self, symbol: str) -> Decimal:
        """The exchange's signed contracts on ``symbol`` (0 when flat)."""
        raise NotImplementedError

    def open_ids(self) -> set[str]:
        """Client ids of every order open and cancellable on the account."""
        raise NotImplementedError

    def alive_ids(self) -> set[str]:
        """Client ids of every order still alive (open, or triggered and executing)."""
        return self.fake.alive_ids()

    def working_stop(self, symbol: str, prefix: str) -> bool:
        return self.fake.working_stop(symbol, prefix)

    def open_summary(self, symbol: str) -> list:
        """(id tail, type) of what rests on ``symbol`` (for violation messages)."""
        return []

    def stray_id(self, prefix: str, n: int) -> str:
        raise NotImplementedError

    def plant_stray(self, symbol: str, client_id: str) -> None:
        raise NotImplementedError

    def plant_foreign(self, symbol: str, client_id: str) -> None:
        """Another bot's limit order far below the price (never fills, never ours)."""
        raise NotImplementedError

    def foreign_id(self, n: int) -> str:
        raise NotImplementedError

    def accepted_ids(self) -> list[str]:
        return self.fake.accepted_ids

    def accepted_twice(self) -> list[str]:
        return self.fake.accepted_twice()

    def fills(self) -> int:
        raise NotImplementedError

    def debug_lines(self, now: int) -> list[str]:
        return []

    # market-data socket (venues that stream candles)
    async def socket_fault(self, kind: str) -> None:
        raise NotImplementedError

    def socket_recover(self) -> None:
        pass

    async def let_the_socket_deliver(self, feed: Any) -> None:
        pass


class BinanceVenue(ChaosVenue):
    """The strict fake Binance USDⓈ-M (``tests.fake_binance``) with its market-data websocket
    (S-2: the feed falls back to REST and back) and Binance's faults: 5xx, 429 and 418 with
    Retry-After, -1021, timeout after accept, accepted but not yet visible, partial fills, stops
    that expire unfilled, part-fill then expire or hang TRIGGERING, the demo venue's own cancels."""

    name = "binanceusdm"
    fault_paths = {
        "5xx": ("/order", "/algoOrder", "openOrders", "openAlgoOrders", "positionRisk", "account", "leverage",
                "klines"),
        "429": ("/order", "/algoOrder", "openOrders", "positionRisk", "account", "klines"),
        "418": ("/order", "openAlgoOrders", "account"),
        "-1021": ("/order", "/algoOrder", "openOrders", "account", "positionRisk"),
        "timeout_after_accept": ("/order", "/algoOrder"),
        "partial": ("/order",),
        "invisible": ("/order", "/algoOrder"),
        "stop_expire": ("",),
        "stop_partial_expire": ("",),
        "stop_stuck": ("",),
    }
    socket_faults = ("socket_drop", "socket_refuse", "socket_silence")
    # Binance's demo venue cancels conditional orders on its own after about 53 s; positions here
    # live a few seconds (random closes), so the venue does it sooner to meet them.
    DEMO_CANCEL_AFTER_MS = 6_000

    def __init__(self) -> None:
        from tests.fake_binance import FakeBinance
        from trading.adapters.marketdata import default_data_dir

        self.fake = FakeBinance(default_data_dir(), symbols=SYMBOLS, stall_s=0.2, start_index=60,
                                demo_cancel_after_ms=self.DEMO_CANCEL_AFTER_MS)
        self.fake.venue.stuck_candles = 5  # a hung stop outlives the 5 s grace (about 7 candles a second here)

    async def start(self, time: SimTime) -> None:
        self.fake.wall_ms = time.clock.now_ms  # the exchange's server time is the simulated time
        await self.fake.start()

    def adapter(self) -> CcxtExchange:
        from tests.fake_binance import API_KEY, API_SECRET

        return CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=self.fake.base_url,
                            timeout_ms=120, rate_limit_ms=1)

    def ws_client(self) -> Any:
        from trading.adapters.ws_feed import make_ws_client

        return make_ws_client("demo", api_base=self.fake.base_url, timeout_ms=2_000)

    def inject(self, kind: str, path: str, count: int, retry_after_s: int) -> None:
        self.fake.inject(kind, path=path, count=count, retry_after_s=retry_after_s)

    def last(self, symbol: str) -> Decimal:
        return self.fake.venue.last[symbol]

    def set_mark_offset(self, symbol: str, offset: Decimal) -> None:
        self.fake.venue.mark_offset[symbol] = offset

    def position(self, symbol: str) -> Decimal:
        remote = self.fake.position(symbol)
        return remote[0] if remote else Decimal(0)

    def open_ids(self) -> set[str]:
        return {o.client_order_id for o in self.fake.open_orders()}

    def open_summary(self, symbol: str) -> list:
        return [(o.client_order_id[-8:], o.type.value) for o in self.fake.open_orders(symbol)]

    def stray_id(self, prefix: str, n: int) -> str:
        return f"{prefix}stray{n}-tp1"  # a dash: valid on Binance, and the leg is read after it

    def plant_stray(self, symbol: str, client_id: str) -> None:
        self.fake.plant_order(symbol, client_id, Decimal(100))

    def foreign_id(self, n: int) -> str:
        return f"otherbot_{n}"

    def plant_foreign(self, symbol: str, client_id: str) -> None:
        market = self.fake.venue.rules[symbol]
        price = (self.fake.venue.last[symbol] / 2 // market.tick) * market.tick
        self.fake.venue.place_order(symbol, client_id, "BUY", "LIMIT", (Decimal(20) / price // market.step) * market.step,
                                    price, False, "GTC")

    def fills(self) -> int:
        return len(self.fake.trades)

    def debug_lines(self, now: int) -> list[str]:
        venue = self.fake.venue
        return ([f"order {o}" for o in venue.orders.values() if now - o.time_ms < 120_000]
                + [f"algo {a}" for a in venue.algos.values() if now - a.create_ms < 120_000]
                + [f"trade {t}" for t in venue.trades if now - t.time_ms < 120_000])

    async def socket_fault(self, kind: str) -> None:
        """Drop every market-data socket, or refuse new ones / keep them silent (S-2 faults)."""
        self.fake.faults_injected[kind] += 1
        if kind == "socket_drop":
            await self.fake.ws.drop()
        elif kind == "socket_refuse":
            self.fake.ws.refuse()
            await self.fake.ws.drop()  # a refused redial needs the current socket gone
        else:
            self.fake.ws.silence()

    def socket_recover(self) -> None:
        self.fake.ws.accept()  # a refusing or silent stream server recovers
        self.fake.ws.speak()

    async def let_the_socket_deliver(self, feed: Any) -> None:
        """Give a healthy socket (real time, up to 0.5 s) to deliver the candle just pushed, so a
        run depends on the seed and not on the machine's speed; a troubled one is not waited for."""
        if not isinstance(feed, HybridCandleFeed):
            return
        if self.fake.ws.silent or not feed.listening or feed.active != WEBSOCKET:
            return
        wanted = {f"{self.fake.raw_markets[s]['id'].lower()}@kline_1m" for s in SYMBOLS}
        if not any(wanted <= sock.streams for sock in self.fake.ws.sockets):
            return
        messages = feed.messages
        for _ in range(50):
            if feed.messages > messages or not feed.listening:
                return
            await asyncio.sleep(0.01)


class OkxVenue(ChaosVenue):
    """The strict fake OKX v5 REST API (``tests.fake_okx``), polled over REST (OptiFlow has no OKX
    websocket), with OKX's faults: HTTP 503, 50011 rate limit (HTTP 429), the reply lost after the
    order was accepted, accepted but not yet visible (an assumption: OKX documents no lag), market
    orders filling half and cancelled for the rest (OKX's market orders do not rest), and triggered algo orders whose order is
    refused (``order_failed``) or fills half and is cancelled for the rest."""

    name = "okx"
    fault_paths = {
        "5xx": ("trade/batch-orders", "trade/order-algo", "trade/orders-pending", "trade/orders-algo-pending",
                "trade/order", "trade/cancel", "account/positions", "account/balance", "trade/fills", "market/candles"),
        "50011": ("trade/batch-orders", "trade/order-algo", "trade/orders-algo-pending", "account/positions",
                  "trade/fills", "market/candles"),
        "timeout_after_accept": ("trade/batch-orders", "trade/order-algo"),
        "partial": ("",),
        "invisible": ("",),
        "stop_fail": ("",),
        "stop_partial": ("",),
    }

    def __init__(self) -> None:
        from tests.fake_okx import FakeOkx
        from trading.adapters.marketdata import default_data_dir

        self.fake = FakeOkx(default_data_dir(), symbols=SYMBOLS, stall_s=0.2, start_index=60)

    async def start(self, time: SimTime) -> None:
        self.fake.wall_ms = time.clock.now_ms  # the exchange's server time is the simulated time
        await self.fake.start()

    def adapter(self) -> CcxtExchange:
        from tests.fake_okx import API_KEY, API_SECRET, PASSPHRASE

        return CcxtExchange(exchange_id="okx", mode="demo", api_key=API_KEY, secret=API_SECRET,
                            password=PASSPHRASE, api_base=self.fake.base_url, timeout_ms=120, rate_limit_ms=1)

    def inject(self, kind: str, path: str, count: int, retry_after_s: int) -> None:
        self.fake.inject(kind, path=path, count=count)

    def last(self, symbol: str) -> Decimal:
        return self.fake.last[symbol]

    def set_mark_offset(self, symbol: str, offset: Decimal) -> None:
        self.fake.mark_offset[symbol] = offset

    def position(self, symbol: str) -> Decimal:
        return self.fake.position(symbol)

    def open_ids(self) -> set[str]:
        # What the venue shows: an order not visible yet can be neither listed nor cancelled. (A
        # stop whose id OKX refused as used before is sent under a new id, issue 18; the first
        # one, if it was alive but not shown yet, is a stray of ours that the reconciliation
        # cancels once the venue shows it.)
        return self.fake.open_ids(shown=True)

    def open_summary(self, symbol: str) -> list:
        return ([(a.algo_cl_ord_id[-8:], "algo") for a in self.fake.open_algos(symbol)]
                + [(self.fake.client_id(o)[-8:], o.ord_type) for o in self.fake.open_orders(symbol)])

    def stray_id(self, prefix: str, n: int) -> str:
        return f"{prefix}stray{n:011d}tp1"  # letters and digits, the leg at its fixed place (O-2)

    def plant_stray(self, symbol: str, client_id: str) -> None:
        self.fake.plant_algo(symbol, client_id, Decimal(1))

    def foreign_id(self, n: int) -> str:
        return f"otherbot{n}"

    def plant_foreign(self, symbol: str, client_id: str) -> None:
        inst = self.fake.by_symbol[symbol]
        price = (self.fake.last[symbol] / 2 // inst.tick) * inst.tick
        self.fake.place_by_hand(symbol, client_id, "buy", max(inst.min_sz, (Decimal(20) / (price * inst.ct_val)
                                                                            // inst.lot) * inst.lot), price)

    def fills(self) -> int:
        return len(self.fake.fills)

    def debug_lines(self, now: int) -> list[str]:
        fake = self.fake
        return ([f"order {o}" for o in fake.orders.values() if now - o.c_time < 120_000]
                + [f"algo {a}" for a in fake.algos.values() if now - a.c_time < 120_000]
                + [f"fill {f}" for f in fake.fills if now - f.ts < 120_000])


# ---------------------------------------------------------------------------- the bot under test
class CheckedReconciler:
    """The runtime's reconciler, checked the moment each pass returns (before the rest of the
    supervisor's tick sends anything): "local state equal to the exchange after every
    reconcile"."""

    def __init__(self, inner, chaos: "Chaos") -> None:
        self._inner, self._chaos = inner, chaos

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def run(self):
        """One reconciliation pass, then the invariants (deferred while the exchange does not
        show an order of ours yet: the pass says so and runs again a second later)."""
        report = await self._inner.run()
        if self._inner.unsettled:
            self._chaos.figures["reconciliations_deferred_unsettled"] += 1
        else:
            self._chaos.check_reconciled("reconcile")
        return report


class Chaos:
    """The bot under test on ``venue``, killable and rebuildable from its SQLite file."""

    def __init__(self, venue: ChaosVenue, db: Path, time: SimTime, rng: random.Random) -> None:
        self.venue, self.db, self.time, self.rng = venue, db, time, rng
        self.rt: Runtime | None = None
        self.prefix = client_order_id_prefix("demo", BOT)
        self.figures: Counter = Counter()
        self.violations: list[str] = []
        self.unprotected_since: dict[str, int] = {}
        self.socket_trouble_until = 0  # simulated ms when a refusing / silent stream server recovers
        self.spike: str | None = None  # a symbol whose mark price is spiked for the next candle
        self.steps_done = 0
        self.foreign_ids: list[str] = []  # far-away limit orders of another bot on the account

    async def start(self) -> None:
        """Build (restore + reconcile); a build failing on injected faults is retried."""
        failure = ""
        for _ in range(20):
            adapter = self.venue.adapter()
            ws_client = self.venue.ws_client()
            try:
                self.rt = await build_exchange_runtime(
                    config=chaos_config(), db_path=self.db, exchange=adapter, env="demo",
                    clock=self.time.clock, sleep=self.time.sleep, rng=random.Random(self.rng.random()),
                    ws_client=ws_client,
                )
            except ExchangeError as exc:
                await adapter.close()
                if ws_client is not None:
                    await ws_client.close()
                self.figures["restart_retries"] += 1
                failure = exc.reason
                continue
            if self.rt.supervisor.reconciler.unsettled:
                self.figures["reconciliations_deferred_unsettled"] += 1
            else:
                self.check_reconciled("restart")  # right after the start-up reconciliation (L-3)
            self.rt.supervisor.reconciler = CheckedReconciler(self.rt.supervisor.reconciler, self)
            try:
                await self.rt.feed.warm_up(self.time.clock.now_ms())
            except ExchangeError as exc:
                failure = exc.reason
                await self.rt.close()
                self.rt = None
                self.figures["restart_retries"] += 1
                continue
            self.figures["strays_cancelled"] += self.rt.reconcile_report.strays_cancelled
            self.figures["positions_repaired_at_restart"] += self.rt.reconcile_report.positions_repaired
            self.figures["foreign_incidents_reported_at_restart"] += len(self.rt.guard.foreign) if self.rt.guard else 0
            return
        raise AssertionError(f"the bot could not start 20 times in a row: {failure}")

    async def kill(self, task: asyncio.Task | None) -> None:
        """Cancel the in-flight operation, drop everything unflushed, close the connections."""
        if task is not None:
            for _ in range(self.rng.randrange(0, 12)):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, ExchangeError):
                pass
        assert self.rt is not None
        self.check_feed()
        self.collect_guard()
        await self.rt.close(flush=False)
        self.rt = None
        self.figures["kills"] += 1

    def collect_guard(self) -> None:
        """The venue guard's counts of this bot process (issue 13 items 9–12)."""
        guard = self.rt.guard if self.rt else None
        if guard is None:
            return
        self.figures["venue_cancels_seen"] += guard.venue_cancels
        self.figures["stops_triggered_not_filled_closed"] += guard.stops_not_filled
        self.figures["canary_runs"] += guard.canary_runs
        self.figures["canary_failures"] += guard.canary_failures
        self.figures["duplicate_replies"] += self.rt.gateway.stats["duplicate_reply"]
        self.figures["ids_renewed"] += self.rt.gateway.stats["id_renewed"]

    # ------------------------------------------------------------ invariants
    def ours_on_exchange(self) -> set[str]:
        return {cid for cid in self.venue.open_ids() if cid.startswith(self.prefix)}

    def check_reconciled(self, when: str) -> None:
        """After a reconciliation: no orphans (ours and cancellable on the exchange but not
        tracked; tracked but gone from the exchange), the other bot's orders untouched, and
        local positions equal the exchange's."""
        assert self.rt is not None
        self.figures["reconciliations_checked"] += 1
        before = len(self.violations)
        when = f"step {self.steps_done} {when}"
        local_orders = set(self.rt.engine.open_orders)
        remote_orders = self.ours_on_exchange()
        alive = self.venue.alive_ids()
        if not remote_orders <= local_orders or not local_orders <= alive:
            self.violations.append(f"{when}: orders local-only {local_orders - alive}, "
                                   f"exchange-only {remote_orders - local_orders}")
        foreign_open = self.venue.open_ids() & set(self.foreign_ids)
        if foreign_open != set(self.foreign_ids):
            self.violations.append(f"{when}: the other bot's orders were cancelled: {set(self.foreign_ids) - foreign_open}")
        for symbol in SYMBOLS:
            remote_signed = self.venue.position(symbol)
            local = self.rt.engine.positions.get((BOT, symbol))
            local_signed = Decimal(0) if local is None else local.contracts * local.side.sign
            if remote_signed != local_signed:
                self.violations.append(f"{when}: {symbol} exchange {remote_signed} local {local_signed}")
        if len(self.violations) > before and os.environ.get("CHAOS_DEBUG"):
            self.debug_dump(when)

    def debug_dump(self, when: str) -> None:
        """CHAOS_DEBUG=<file>: what the bot and the exchange held when an invariant broke."""
        rt = self.rt
        now = self.time.clock.now_ms()
        lines = [f"== {when} (sim {now})", f"violations: {self.violations[-3:]}",
                 f"local positions: {rt.engine.positions}", f"local orders: {list(rt.engine.open_orders.values())}",
                 f"pending: {rt.engine.book.pending}", f"unsettled {rt.supervisor.reconciler.unsettled}",
                 f"gateway stats {dict(rt.gateway.stats)}"]
        lines += self.venue.debug_lines(now)
        with open(os.environ["CHAOS_DEBUG"], "a", encoding="utf-8") as handle:
            handle.write("\n".join(str(line) for line in lines) + "\n")

    def check_feed(self) -> None:
        """S-2: this bot process fed each candle to the engine once, in order, without a gap."""
        assert self.rt is not None
        feed = self.rt.feed
        rest = feed.rest_feed if isinstance(feed, HybridCandleFeed) else feed
        for symbol in SYMBOLS:
            stamps = [t for s, _, t, _ in rest.journal if s == symbol]
            if any(b - a != TIMEFRAME_MS for a, b in zip(stamps, stamps[1:])):
                self.violations.append(f"{symbol}: candles processed out of order, twice or with a gap: {stamps}")
        if isinstance(feed, HybridCandleFeed):
            for source, count in feed.processed_by.items():
                self.figures[f"candles_by_{source}"] += count
            self.figures["feed_switches"] += feed.switches
        else:
            self.figures["candles_by_rest"] += feed.processed

    def check_stops(self) -> None:
        """Every exchange position has a working stop of ours within STOP_DEADLINE_MS."""
        now = self.time.clock.now_ms()
        for symbol in SYMBOLS:
            position = self.venue.position(symbol)
            stopped = self.venue.working_stop(symbol, self.prefix)
            if position == 0 or stopped:
                self.unprotected_since.pop(symbol, None)
                continue
            since = self.unprotected_since.setdefault(symbol, now)
            if now - since > STOP_DEADLINE_MS:
                local = self.rt.engine.positions.get((BOT, symbol)) if self.rt else None
                self.violations.append(f"{symbol}: position {position} without a stop for {now - since} ms"
                                       + (f" [local {local and local.contracts}, tracked "
                                          f"{[o.client_order_id[-8:] for o in self.rt.engine.open_orders.values()]}, "
                                          f"exchange {self.venue.open_summary(symbol)}, "
                                          f"pending {self.rt.engine.pending_entries()}]" if self.rt else ""))
                self.unprotected_since[symbol] = now  # report each 2 s gap once
                if os.environ.get("CHAOS_DEBUG") and self.rt:
                    self.debug_dump(f"step {self.steps_done} stop check")

    # ----------------------------------------------------------------- steps
    def entry_task(self) -> asyncio.Task | None:
        assert self.rt is not None
        engine = self.rt.engine
        symbol = self.rng.choice(SYMBOLS)
        if (BOT, symbol) in engine.positions or engine.pending_entries() or self.venue.position(symbol):
            return None
        market = engine.markets[symbol]
        price = Decimal(repr(self.venue.close(symbol)))
        contracts = (NOTIONAL / (price * market.contract_size) // market.step_size) * market.step_size
        if contracts < market.min_qty:
            contracts = market.min_qty
        side = self.rng.choice((Side.LONG, Side.SHORT))
        self.figures["entries_sent"] += 1
        limit_price = None
        if self.rng.random() < 0.3:  # O-3: a GTC limit at the last close (it fills or expires) or
            # 5 % away on the passive side (it expires after 20 s)
            away = Decimal(1) if self.rng.random() < 0.75 else Decimal("0.95") if side is Side.LONG else Decimal("1.05")
            limit_price = (price * away // market.tick_size) * market.tick_size
            self.figures["limit_entries_sent"] += 1
        return asyncio.ensure_future(engine.submit_entry(BOT, symbol, side, contracts, limit_price=limit_price))

    def close_task(self) -> asyncio.Task | None:
        assert self.rt is not None
        if not self.rt.engine.positions:
            return None
        bot, symbol = self.rng.choice(sorted(self.rt.engine.positions))
        self.figures["closes_sent"] += 1
        return asyncio.ensure_future(self.rt.engine.close_position(bot, symbol))

    async def socket_fault(self, kind: str) -> None:
        """A market-data socket fault; a refusing or silent stream server stays so for 5–40 s of
        simulated time."""
        await self.venue.socket_fault(kind)
        if kind != "socket_drop":
            self.socket_trouble_until = self.time.clock.now_ms() + self.rng.randint(20, 160) * STEP_MS

    def trace(self) -> None:
        """CHAOS_TRACE_FROM: log every step from there on."""
        if not os.environ.get("CHAOS_TRACE_FROM"):
            return
        start = int(os.environ["CHAOS_TRACE_FROM"])
        if self.steps_done == start:
            handler = logging.FileHandler(os.environ.get("CHAOS_TRACE_FILE", "chaos-trace.log"))
            handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
            logging.getLogger("trading").addHandler(handler)
            logging.getLogger("trading").setLevel(os.environ.get("CHAOS_TRACE_LEVEL", "DEBUG"))
        if self.steps_done >= start and self.rt:
            logging.getLogger("trading.chaos").warning(
                "step %s sim %s local %s pending %s orders %s unconfirmed %s undecided %s", self.steps_done,
                self.time.clock.now_ms(), {k[1]: v.contracts for k, v in self.rt.engine.positions.items()},
                list(self.rt.engine.book.pending), [c[-12:] for c in self.rt.engine.open_orders],
                self.rt.supervisor.tracker.unconfirmed, self.rt.guard.undecided)

    async def step(self) -> None:
        rng = self.rng
        venue = self.venue
        self.steps_done += 1
        self.trace()
        self.time.clock.current_ms += STEP_MS
        roll = rng.random()
        if self.socket_trouble_until and self.time.clock.now_ms() >= self.socket_trouble_until:
            venue.socket_recover()
            self.socket_trouble_until = 0
        if roll < 0.14:
            venue.advance()
            self.figures["candles"] += 1
            if self.spike is not None:  # the mark spike lasted one candle
                venue.set_mark_offset(self.spike, Decimal(0))
                self.spike = None
            if self.rt is not None:
                await venue.let_the_socket_deliver(self.rt.feed)
        elif roll < 0.25:
            kind = rng.choice(tuple(venue.fault_paths))
            venue.inject(kind, rng.choice(venue.fault_paths[kind]), rng.randint(1, 2), rng.choice((0, 1)))
        elif roll < 0.26:
            if venue.socket_faults:
                await self.socket_fault(rng.choice(venue.socket_faults))
        elif roll < 0.27:
            # a stray of ours the bot does not know (its database lost it): reconcile cancels it
            self.figures["strays_planted"] += 1
            venue.plant_stray(rng.choice(SYMBOLS), venue.stray_id(self.prefix, self.figures["strays_planted"]))
        elif roll < 0.275 and len(self.foreign_ids) < 6:
            # another bot on the account: a limit far below the price (it never fills); never ours to cancel
            symbol = rng.choice(SYMBOLS)
            cid = venue.foreign_id(len(self.foreign_ids) + 1)
            venue.plant_foreign(symbol, cid)
            self.foreign_ids.append(cid)
            self.figures["foreign_orders_planted"] += 1
        elif roll < 0.285 and self.spike is None:
            # a mark-price spike for the next candle: long stops (mark price) trigger when it is down,
            # short ones when it is up — with the trigger faults armed, some die or hang
            symbol = rng.choice(SYMBOLS)
            last = venue.last(symbol)
            venue.set_mark_offset(symbol, last * Decimal(rng.choice(("-0.015", "0.015"))))
            self.spike = symbol
            self.figures["mark_spikes"] += 1
        task = None
        if roll >= 0.285:
            action = rng.random()
            if action < 0.25:
                task = self.entry_task()
            elif action < 0.33:
                task = self.close_task()
        if rng.random() < (0.06 if task is not None else 0.01):
            self.figures["kills_mid_order" if task is not None else "kills_idle"] += 1
            await self.kill(task)
            await self.start()
            return
        if task is not None:
            try:
                await task
            except ExchangeError:
                self.figures["operations_failed"] += 1
        assert self.rt is not None
        await self.rt.feed.step(self.time.clock.now_ms())  # one pass of the live loop: candles, then checks
        report = await self.rt.tick(self.time.clock.now_ms())
        if report is not None:
            self.figures["strays_cancelled"] += report.strays_cancelled
            self.figures["positions_repaired_running"] += report.positions_repaired
        self.check_stops()


async def run_chaos(venue: ChaosVenue, db: Path, *, seed: int, steps: int) -> Chaos:
    """``steps`` seeded chaos steps on ``venue``, a last clean reconciliation, then the invariants
    every venue must keep: no client id accepted twice, no violation. Returns the run (its
    ``figures``; the venue's counters stay on ``venue.fake``) for the venue's own checks."""
    rng = random.Random(seed)
    time = SimTime()
    await venue.start(time)
    chaos = Chaos(venue, db, time, rng)
    try:
        await chaos.start()
        for _ in range(steps):
            await chaos.step()
        venue.clear_faults()
        chaos.time.clock.current_ms += 31_000  # a last clean reconciliation
        assert chaos.rt is not None
        final = await chaos.rt.tick(chaos.time.clock.now_ms())
        assert final is not None
        chaos.figures["strays_cancelled"] += final.strays_cancelled
        chaos.check_reconciled("final")
        chaos.check_feed()
        chaos.collect_guard()
    finally:
        if chaos.rt is not None:
            await chaos.rt.close()
        await venue.stop()
    faults = dict(venue.faults_injected)
    chaos.figures["faults_total"] = sum(faults.values())
    print(f"\nchaos on {venue.name}: steps {steps}, seed {seed}, faults injected {faults} (total "
          f"{sum(faults.values())}), {dict(chaos.figures)}, orders accepted {len(venue.accepted_ids())}, fills "
          f"{venue.fills()}, client ids accepted twice {venue.accepted_twice()}, violations {len(chaos.violations)}")
    assert venue.accepted_twice() == [], venue.accepted_twice()
    assert chaos.violations == [], chaos.violations[:10]
    return chaos
