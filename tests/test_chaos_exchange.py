"""Chaos test of the live order path (issue 4 acceptance, issue 13 acceptance; SPEC O-2, O-4, O-5,
O-6, O-8, R-10, L-3).

Seeded random steps against the strict loopback fake Binance USDⓈ-M (tests/fake_binance.py) with
the real ccxt client, the real engine, the order gateway and a real SQLite file. Every step
moves simulated time by 250 ms — the bot's clock and the exchange's server time alike; the fake
moves to its next real candle at random; entries (market, or GTC limits at the last close that
fill or expire after 20 s, O-3) and closes are sent at random; faults are armed at random (5xx,
429 and 418 with Retry-After — the 418 an IP ban —, -1021, timeout after the order was accepted,
"accepted but not yet visible" for 1.5 s, partial fills, also on the REST candle reads); stops
trigger on real candles and on mark-price spikes, and triggered stops expire unfilled,
part-fill then expire, or hang TRIGGERING (issue 13); the venue cancels conditional orders on
its own after 53 s (Binance's demo environment); the market-data socket is dropped, refused or
silenced at random (S-2: the feed falls back to REST polling and switches back); stray orders of
ours that the bot does not know are planted on the exchange, and far-away limit orders of
another bot on the account; and the bot is killed at random mid-order (its in-flight task
cancelled, nothing flushed, every in-memory object dropped) and rebuilt from the SQLite file,
then reconciled (the daily canary runs after each start). Each step runs one pass of the live
loop: the candle feed (websocket or REST), then the supervisor's fill poll, stop checks,
reconciliation and the venue guard. The strategy never enters (its minimum score is out of
reach: the test sends its entries itself, and a paused symbol would refuse those too at the
order gate); its exits run on the candles.

Asserted throughout: no client order id is ever accepted twice by the exchange (a duplicated
order; Binance accepts an id again once its first order is no longer open), every exchange
position has a working stop of ours (waiting, or triggered and executing) within 2 s of
simulated time, after every reconciliation there is no orphan order (ours and cancellable on the
exchange but not tracked, or tracked but gone from the exchange) and local positions equal the
exchange's (a reconciliation that met an order the exchange does not show yet, or a market order
of ours still working whose fills may be unbooked, says so and runs again a second later: it is
checked then), the other bot's orders are never cancelled, and each bot process fed every candle to
the engine exactly once, in order, without a gap, whichever source brought it.

Switches: ``CHAOS_SEED``, ``CHAOS_STEPS`` (default 2,000; the README's figures are for 10,000);
``CHAOS_DEBUG=<file>`` appends what the bot and the exchange held whenever an invariant breaks;
``CHAOS_TRACE_FROM=<step>`` (with ``CHAOS_TRACE_FILE``, ``CHAOS_TRACE_LEVEL``) logs every step
from there on.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from decimal import Decimal

from bot.runtime import Runtime, build_exchange_runtime
from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.domain.config import TradingConfig
from trading.domain.errors import ExchangeError
from trading.adapters.marketdata import default_data_dir
from trading.domain.models import Side
from trading.domain.oms import client_order_id_prefix
from trading.ports import ReplayClock
from trading.adapters.ws_feed import WEBSOCKET, HybridCandleFeed, make_ws_client

SEED = int(__import__("os").environ.get("CHAOS_SEED", "20250603"))
STEPS = int(__import__("os").environ.get("CHAOS_STEPS", "2000"))
STEP_MS = 250
STOP_DEADLINE_MS = 2_000
SYMBOLS = ("XRP/USDT:USDT", "DOGE/USDT:USDT")
NOTIONAL = Decimal(12)
FAULT_PATHS = {
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
SOCKET_FAULTS = ("socket_drop", "socket_refuse", "socket_silence")
# Binance's demo venue cancels conditional orders on its own after about 53 s; positions here live a
# few seconds (random closes), so the venue does it sooner to meet them.
DEMO_CANCEL_AFTER_MS = 6_000
TIMEFRAME_MS = 60_000


class SimTime:
    """Simulated time shared by the bot's clock and the gateway's waits."""

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
    bot = base.bots[0].model_copy(update={"name": "chaos", "symbols": SYMBOLS, "timeframe": "1m",
                                          "strategy": strategy})
    orders = base.orders.model_copy(update={"limit_entry_timeout_s": 20})  # limit entries expire within the run
    return base.model_copy(update={"bots": (bot,), "orders": orders})


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
    """The bot under test, killable and rebuildable from its SQLite file."""

    def __init__(self, fake: FakeBinance, db, time: SimTime, rng: random.Random) -> None:
        self.fake, self.db, self.time, self.rng = fake, db, time, rng
        self.rt: Runtime | None = None
        self.prefix = client_order_id_prefix("demo", "chaos")
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
            adapter = CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=self.fake.base_url,
                                   timeout_ms=120, rate_limit_ms=1)
            ws_client = make_ws_client("demo", api_base=self.fake.base_url, timeout_ms=2_000)
            try:
                self.rt = await build_exchange_runtime(
                    config=chaos_config(), db_path=self.db, exchange=adapter, env="demo",
                    clock=self.time.clock, sleep=self.time.sleep, rng=random.Random(self.rng.random()),
                    ws_client=ws_client,
                )
            except ExchangeError as exc:
                await adapter.close()
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

    # ------------------------------------------------------------ invariants
    def ours_on_exchange(self) -> set[str]:
        return {o.client_order_id for o in self.fake.open_orders() if o.client_order_id.startswith(self.prefix)}

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
        alive = self.fake.alive_ids()
        if not remote_orders <= local_orders or not local_orders <= alive:
            self.violations.append(f"{when}: orders local-only {local_orders - alive}, "
                                   f"exchange-only {remote_orders - local_orders}")
        foreign_open = {o.client_order_id for o in self.fake.open_orders()} & set(self.foreign_ids)
        if foreign_open != set(self.foreign_ids):
            self.violations.append(f"{when}: the other bot's orders were cancelled: {set(self.foreign_ids) - foreign_open}")
        for symbol in SYMBOLS:
            remote = self.fake.position(symbol)
            remote_signed = remote[0] if remote else Decimal(0)
            local = self.rt.engine.positions.get(("chaos", symbol))
            local_signed = Decimal(0) if local is None else local.contracts * local.side.sign
            if remote_signed != local_signed:
                self.violations.append(f"{when}: {symbol} exchange {remote_signed} local {local_signed}")
        if len(self.violations) > before and os.environ.get("CHAOS_DEBUG"):
            self.debug_dump(when)

    def debug_dump(self, when: str) -> None:
        """CHAOS_DEBUG=<file>: what the bot and the exchange held when an invariant broke."""
        rt, venue = self.rt, self.fake.venue
        now = self.time.clock.now_ms()
        lines = [f"== {when} (sim {now})", f"violations: {self.violations[-3:]}",
                 f"local positions: {rt.engine.positions}", f"local orders: {list(rt.engine.open_orders.values())}",
                 f"pending: {rt.engine.book.pending}", f"unsettled {rt.supervisor.reconciler.unsettled}",
                 f"gateway stats {dict(rt.gateway.stats)}"]
        lines += [f"order {o}" for o in venue.orders.values() if now - o.time_ms < 120_000]
        lines += [f"algo {a}" for a in venue.algos.values() if now - a.create_ms < 120_000]
        lines += [f"trade {t}" for t in venue.trades if now - t.time_ms < 120_000]
        with open(os.environ["CHAOS_DEBUG"], "a", encoding="utf-8") as handle:
            handle.write("\n".join(str(line) for line in lines) + "\n")

    def check_feed(self) -> None:
        """S-2: this bot process fed each candle to the engine once, in order, without a gap."""
        assert self.rt is not None
        feed = self.rt.feed
        assert isinstance(feed, HybridCandleFeed)
        for symbol in SYMBOLS:
            stamps = [t for s, _, t, _ in feed.rest_feed.journal if s == symbol]
            if any(b - a != TIMEFRAME_MS for a, b in zip(stamps, stamps[1:])):
                self.violations.append(f"{symbol}: candles processed out of order, twice or with a gap: {stamps}")
        for source, count in feed.processed_by.items():
            self.figures[f"candles_by_{source}"] += count
        self.figures["feed_switches"] += feed.switches

    def check_stops(self) -> None:
        """Every exchange position has a resting stop of ours within STOP_DEADLINE_MS."""
        now = self.time.clock.now_ms()
        for symbol in SYMBOLS:
            position = self.fake.position(symbol)
            stopped = self.fake.working_stop(symbol, self.prefix)
            if position is None or stopped:
                self.unprotected_since.pop(symbol, None)
                continue
            since = self.unprotected_since.setdefault(symbol, now)
            if now - since > STOP_DEADLINE_MS:
                local = self.rt.engine.positions.get(("chaos", symbol)) if self.rt else None
                self.violations.append(f"{symbol}: position {position[0]} without a stop for {now - since} ms"
                                       + (f" [local {local and local.contracts}, tracked "
                                          f"{[o.client_order_id[-8:] for o in self.rt.engine.open_orders.values()]}, "
                                          f"exchange {[(o.client_order_id[-8:], o.type.value) for o in self.fake.open_orders(symbol)]}, "
                                          f"pending {self.rt.engine.pending_entries()}]" if self.rt else ""))
                self.unprotected_since[symbol] = now  # report each 2 s gap once
                if os.environ.get("CHAOS_DEBUG") and self.rt:
                    self.debug_dump(f"step {self.steps_done} stop check")

    # ----------------------------------------------------------------- steps
    def entry_task(self) -> asyncio.Task | None:
        assert self.rt is not None
        engine = self.rt.engine
        symbol = self.rng.choice(SYMBOLS)
        if ("chaos", symbol) in engine.positions or engine.pending_entries() or self.fake.position(symbol):
            return None
        market = engine.markets[symbol]
        price = Decimal(repr(self.fake.candle(symbol)[4]))
        contracts = (NOTIONAL / price // market.step_size) * market.step_size
        side = self.rng.choice((Side.LONG, Side.SHORT))
        self.figures["entries_sent"] += 1
        limit_price = None
        if self.rng.random() < 0.3:  # O-3: a GTC limit at the last close (it fills or expires) or
            # 5 % away on the passive side (it expires after 20 s)
            away = Decimal(1) if self.rng.random() < 0.75 else Decimal("0.95") if side is Side.LONG else Decimal("1.05")
            limit_price = (price * away // market.tick_size) * market.tick_size
            self.figures["limit_entries_sent"] += 1
        return asyncio.ensure_future(engine.submit_entry("chaos", symbol, side, contracts, limit_price=limit_price))

    def close_task(self) -> asyncio.Task | None:
        assert self.rt is not None
        if not self.rt.engine.positions:
            return None
        bot, symbol = self.rng.choice(sorted(self.rt.engine.positions))
        self.figures["closes_sent"] += 1
        return asyncio.ensure_future(self.rt.engine.close_position(bot, symbol))

    async def socket_fault(self, kind: str) -> None:
        """Drop every market-data socket, or refuse new ones / keep them silent for 5–40 s of
        simulated time (S-2 faults)."""
        self.fake.faults_injected[kind] += 1
        if kind == "socket_drop":
            await self.fake.ws.drop()
            return
        if kind == "socket_refuse":
            self.fake.ws.refuse()
            await self.fake.ws.drop()  # a refused redial needs the current socket gone
        else:
            self.fake.ws.silence()
        self.socket_trouble_until = self.time.clock.now_ms() + self.rng.randint(20, 160) * STEP_MS

    async def let_the_socket_deliver(self) -> None:
        """Give a healthy socket (real time, up to 0.5 s) to deliver the candle just pushed, so a
        run depends on the seed and not on the machine's speed; a troubled one is not waited for."""
        assert self.rt is not None
        feed = self.rt.feed
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

    async def step(self) -> None:
        rng = self.rng
        self.steps_done += 1
        if os.environ.get("CHAOS_TRACE_FROM") and self.steps_done == int(os.environ["CHAOS_TRACE_FROM"]):
            import logging

            handler = logging.FileHandler(os.environ.get("CHAOS_TRACE_FILE", "chaos-trace.log"))
            handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
            logging.getLogger("trading").addHandler(handler)
            logging.getLogger("trading").setLevel(os.environ.get("CHAOS_TRACE_LEVEL", "DEBUG"))
        if os.environ.get("CHAOS_TRACE_FROM") and self.steps_done >= int(os.environ["CHAOS_TRACE_FROM"]) and self.rt:
            import logging

            logging.getLogger("trading.chaos").warning(
                "step %s sim %s local %s pending %s orders %s unconfirmed %s undecided %s", self.steps_done,
                self.time.clock.now_ms(), {k[1]: v.contracts for k, v in self.rt.engine.positions.items()},
                list(self.rt.engine.book.pending), [c[-12:] for c in self.rt.engine.open_orders],
                self.rt.supervisor.tracker.unconfirmed, self.rt.guard.undecided)
        self.time.clock.current_ms += STEP_MS
        roll = rng.random()
        if self.socket_trouble_until and self.time.clock.now_ms() >= self.socket_trouble_until:
            self.fake.ws.accept()  # a refusing or silent stream server recovers
            self.fake.ws.speak()
            self.socket_trouble_until = 0
        if roll < 0.14:
            self.fake.advance()
            self.figures["candles"] += 1
            if self.spike is not None:  # the mark spike lasted one candle
                self.fake.venue.mark_offset[self.spike] = Decimal(0)
                self.spike = None
            await self.let_the_socket_deliver()
        elif roll < 0.25:
            kind = rng.choice(tuple(FAULT_PATHS))
            self.fake.inject(kind, path=rng.choice(FAULT_PATHS[kind]), count=rng.randint(1, 2),
                             retry_after_s=rng.choice((0, 1)))
        elif roll < 0.26:
            await self.socket_fault(rng.choice(SOCKET_FAULTS))
        elif roll < 0.27:
            # a stray of ours the bot does not know (its database lost it): reconcile cancels it
            self.figures["strays_planted"] += 1
            self.fake.plant_order(rng.choice(SYMBOLS), f"{self.prefix}stray{self.figures['strays_planted']}-tp1",
                                  Decimal(100))
        elif roll < 0.275 and len(self.foreign_ids) < 6:
            # another bot on the account: a limit far below the price (it never fills); never ours to cancel
            symbol = rng.choice(SYMBOLS)
            market = self.fake.venue.rules[symbol]
            price = (self.fake.venue.last[symbol] / 2 // market.tick) * market.tick
            cid = f"otherbot_{len(self.foreign_ids) + 1}"
            self.fake.venue.place_order(symbol, cid, "BUY", "LIMIT", (Decimal(20) / price // market.step) * market.step,
                                        price, False, "GTC")
            self.foreign_ids.append(cid)
            self.figures["foreign_orders_planted"] += 1
        elif roll < 0.285 and self.spike is None:
            # a mark-price spike for the next candle: long stops (MARK_PRICE) trigger when it is down,
            # short ones when it is up — with the trigger faults armed, some die or hang
            symbol = rng.choice(SYMBOLS)
            last = self.fake.venue.last[symbol]
            self.fake.venue.mark_offset[symbol] = last * Decimal(rng.choice(("-0.015", "0.015")))
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


async def test_chaos_no_duplicates_stops_in_time_no_orphans_state_matches(tmp_path):
    rng = random.Random(SEED)
    fake = FakeBinance(default_data_dir(), symbols=SYMBOLS, stall_s=0.2, start_index=60,
                       demo_cancel_after_ms=DEMO_CANCEL_AFTER_MS)
    fake.venue.stuck_candles = 5  # a hung stop outlives the 5 s grace (about 7 candles a second here)
    time = SimTime()
    fake.wall_ms = time.clock.now_ms  # the exchange's server time is the simulated time
    await fake.start()
    chaos = Chaos(fake, tmp_path / "chaos.db", time, rng)
    try:
        await chaos.start()
        for _ in range(STEPS):
            await chaos.step()
        fake.clear_faults()
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
        await fake.stop()
    limits = Counter(o.status for o in fake.venue.orders.values() if o.type == "LIMIT" and not o.reduce_only
                     and o.client_id.startswith(chaos.prefix))
    chaos.figures["limit_entries_filled"] = limits["FILLED"] + limits["PARTIALLY_FILLED"]
    chaos.figures["limit_entries_cancelled"] = limits["CANCELED"]
    chaos.figures["venue_cancels"] = fake.venue.venue_cancels
    chaos.figures["strays_cancelled_by_the_venue_first"] = sum(
        1 for a in fake.venue.algos.values() if "stray" in a.client_id and a.cancelled_by == "venue")
    algos = Counter(a.status for a in fake.venue.algos.values() if a.client_id.startswith(chaos.prefix))
    chaos.figures["conditional_orders_by_status"] = dict(algos)
    figures = dict(chaos.figures)
    faults = dict(fake.faults_injected)
    print(f"\nchaos: steps {STEPS}, seed {SEED}, faults injected {faults} (total {sum(faults.values())}), "
          f"{figures}, orders accepted {len(fake.accepted_ids)}, fills {len(fake.trades)}, "
          f"client ids accepted twice {fake.accepted_twice()}, -4116 replies {fake.duplicate_rejections}, "
          f"requests during an IP ban {fake.requests_during_ban}, violations {len(chaos.violations)}")
    assert fake.accepted_twice() == [], fake.accepted_twice()
    assert chaos.violations == [], chaos.violations[:10]
    # The run exercised what it claims to.
    assert set(faults) == {"5xx", "429", "418", "-1021", "timeout_after_accept", "partial", "invisible",
                           "stop_expire", "stop_partial_expire", "stop_stuck", *SOCKET_FAULTS}
    assert figures["venue_cancels"] > 0 and figures["mark_spikes"] > 0 and figures["foreign_orders_planted"] > 0
    assert figures["candles_by_websocket"] > 0 and figures["candles_by_rest"] > 0 and figures["feed_switches"] > 0
    assert figures["kills_mid_order"] >= 3 and figures["reconciliations_checked"] >= 20
    assert figures["limit_entries_filled"] > 0 and figures["limit_entries_cancelled"] > 0
    strays = [a for a in fake.venue.algos.values() if "stray" in a.client_id]
    by = Counter(a.cancelled_by for a in strays)
    assert len(strays) == figures["strays_planted"] > 0 and all(a.status == "CANCELED" for a in strays)
    assert by["user"] > 0 and by["user"] + by["venue"] == len(strays)  # the reconciliation's, or the venue's first
    assert len(fake.trades) >= 50
