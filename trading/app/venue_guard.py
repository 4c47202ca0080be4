"""Supervision that only a real venue needs (issue 13, items 9–12; SPEC R-10, O-5, O-6, M-1,
T-6), beside the fill tracker, stop verifier and reconciler of ``trading.app.reconcile``.

- **A stop that triggered but did not fill** (a gap, a price-protection refusal, a part fill then
  nothing): once the exchange adapter reports a tracked stop as triggered and it has not filled
  after ``grace_ms`` (default 5 s), the rest of the position is closed at market (reduce-only)
  and a STOP_NOT_FILLED alert is sent (R-10). A stop that died outright (expired, cancelled) is
  final on the exchange: the fill tracker drops it and the supervisor places a new stop, or
  closes the position when the exchange refuses that stop (-2021: the price is past it).
- **A stop cancelled by the venue, not by us**: Binance's demo environment cancels conditional
  orders on its own (users of Binance's futures connector, issue #260: STOP_MARKET orders gone
  about 53 s after placement). The adapter tells such cancels apart from ours; the stop is placed
  again like any lost stop, a take-profit is placed again under a new client id, the count is
  kept, and /runtime and the build card say that the demo venue does this (so a trader does not
  read it as an incident).
- **Someone else on the account**: an order on our symbols without one of our client-id prefixes,
  or a position (or a part of one) that our own fills do not explain (a second bot, a trade in
  the exchange's app) is reported once as an incident with the "someone_else" playbook (adopt,
  ignore, close); it is never cancelled or booked as ours, and entries on that symbol are paused
  until the trader chooses.
- **Daily canary** (demo always, live opt-in): once a UTC day one far-away reduce-only
  STOP_MARKET is placed on a traded symbol, looked up and cancelled; any step failing raises a
  CANARY_FAILED alert — Binance's move of conditional orders to the algo API broke every peer's
  stops on the same day, and this finds such a change before a real stop needs it.

Built for demo and live by ``bot.runtime.build_exchange_runtime`` (the simulated venue has nobody
else on it and no lag); driven by ``bot.runtime.Runtime.tick`` around each supervisor tick
(:meth:`VenueGuard.before_tick`, :meth:`VenueGuard.tick`) and by the one reconciler
(:meth:`position_is_ours`, :meth:`see_orders`). Pauses go through ``Engine.set_paused`` (the
order gate refuses entries there), a take-profit placed again through the gate
(``Engine.place_bracket``).
Never imports aiogram.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from trading.domain.errors import ExchangeError, OrderNotFound
from trading.domain.events import Alert
from trading.domain.models import ExitReason, Order, OrderLeg, OrderSide, OrderStatus, OrderType, Side
from trading.domain.oms import make_client_order_id
from trading.domain.precision import floor_amount, floor_price
from trading.engine.core import Engine, utc_day

log = logging.getLogger(__name__)

STOP_FILL_GRACE_MS = 5_000  # a triggered stop has this long to fill before the rest is closed
CANARY_DISTANCE = Decimal("0.5")  # the canary stop rests at half the price: it never triggers
SOMEONE_ELSE = "someone_else"  # the playbook of a foreign order or position
DEMO_VENUE_NOTE = ("Binance's demo venue cancels conditional orders on its own (about a minute "
                   "after placement); OptiFlow places them again")


@dataclass(slots=True)
class Foreign:
    """One incident of someone else on the account: on ``symbol``, ``signed`` contracts the
    exchange holds beyond ours (0 for orders only), at ``entry`` (quote), and ``orders`` (client
    ids) that no prefix of ours explains."""

    symbol: str
    bot: str
    signed: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    orders: tuple[str, ...] = ()


@dataclass(slots=True)
class VenueGuard:
    """Items 9–12 of issue 13 for one live/demo runtime.

    Args:
        engine: the trading core (its positions, stops, pauses and alert sink);
        gateway: the order gateway (every request goes through it: retries, locks, bans);
        exchange: the ccxt adapter (``triggered``, ``venue_cancelled``, ``position_order_ids``);
        prefixes: our client-id prefixes (SPEC O-2); mode: "demo" or "live";
        canary: run the daily canary (default: on in demo, off in live unless asked);
        grace_ms: how long a triggered stop may take to fill.
    """

    engine: Engine
    gateway: Any
    exchange: Any
    prefixes: tuple[str, ...]
    mode: str = "demo"
    canary: bool = True
    grace_ms: int = STOP_FILL_GRACE_MS
    foreign: dict[str, Foreign] = field(default_factory=dict)  # open incidents by symbol
    ignored: dict[str, Decimal] = field(default_factory=dict)  # symbol → foreign size the trader ignores
    adopted: set[str] = field(default_factory=set)  # symbols whose foreign position the trader adopted
    venue_cancels: int = 0
    stops_not_filled: int = 0
    canary_day: str = ""
    canary_runs: int = 0
    canary_failures: int = 0
    last_canary: str = ""
    _undecided: set[str] = field(default_factory=set)  # symbols whose position could not be traced yet
    _take_profits: dict[str, Order] = field(default_factory=dict)  # resting before the current tick
    _triggered_since: dict[str, int] = field(default_factory=dict)
    _handled: set[str] = field(default_factory=set)
    _seen_foreign_orders: set[str] = field(default_factory=set)
    _seen_venue_cancels: int = 0
    _paused: set[tuple[str, str]] = field(default_factory=set)  # (bot, symbol) entries this guard paused

    # ------------------------------------------------------------ memory
    def remembered(self) -> dict:
        """What must outlive a restart (SPEC M-1: one alert per incident, not one per start):
        the foreign incidents already reported (symbol → bot, signed contracts, entry, order
        ids), the foreign order ids seen, the foreign sizes the trader chose to ignore and the
        pauses this guard set (so "Adopt" still lifts them). JSON-able; the runtime stores it
        in the database when it changes and gives it back with :meth:`remember` at start."""
        return {
            "reported": {s: [f.bot, str(f.signed), str(f.entry), list(f.orders)] for s, f in sorted(self.foreign.items())},
            "seen_orders": sorted(self._seen_foreign_orders),
            "ignored": {s: str(v) for s, v in sorted(self.ignored.items())},
            # only the pauses still in effect: a trader's /resume since then wins
            "paused": sorted([bot, symbol] for bot, symbol in self._paused
                             if symbol in self.engine.paused.get(bot, ())),
        }

    def remember(self, state: dict) -> None:
        """Take back what :meth:`remembered` gave before a restart."""
        self.foreign = {s: Foreign(s, bot, Decimal(signed), Decimal(entry), tuple(orders))
                        for s, (bot, signed, entry, orders) in state.get("reported", {}).items()}
        self._seen_foreign_orders = set(state.get("seen_orders", ()))
        self.ignored = {s: Decimal(v) for s, v in state.get("ignored", {}).items()}
        self._paused = set()
        for bot, symbol in state.get("paused", ()):
            self._pause(bot, symbol)  # the engine keeps its pauses in memory: set them again

    # ------------------------------------------------------------ the pass
    async def before_tick(self, now_ms: int) -> None:
        """Before the supervisor's tick: note the take-profits resting now (one the venue cancels
        during the tick is placed again after it), and run the canary when due (a canary order
        whose cancel failed is then a stray of ours that the reconciliation cancels)."""
        self._take_profits = {cid: o for cid, o in self.engine.open_orders.items()
                              if o.reduce_only and o.leg in (OrderLeg.TP1, OrderLeg.TP2, OrderLeg.TP3)}
        if self.canary and utc_day(now_ms) != self.canary_day:
            await self.run_canary(now_ms)

    async def tick(self, now_ms: int) -> None:
        """After each supervisor tick: venue cancels counted, triggered stops past their grace
        closed. Exchange errors are logged (the next tick tries again)."""
        for cid in self._count_venue_cancels():
            take_profit = self._take_profits.get(cid)
            if take_profit is not None and cid not in self.engine.open_orders:
                await self._place_take_profit_again(take_profit, now_ms)
        try:
            await self.check_triggered_stops(now_ms)
        except ExchangeError as exc:
            log.warning("triggered-stop check failed: %s", exc.reason)

    def _count_venue_cancels(self) -> list[str]:
        """The conditional orders the venue cancelled on its own since the last call."""
        cancelled = getattr(self.exchange, "venue_cancelled", [])
        new = cancelled[self._seen_venue_cancels:]
        self._seen_venue_cancels = len(cancelled)
        for cid in new:
            self.venue_cancels += 1
            log.warning("the venue cancelled %s on its own (not this bot): placing it again", cid)
        return list(new)

    async def _place_take_profit_again(self, order: Order, now_ms: int) -> None:
        """A take-profit the venue cancelled, placed again under a new client id for what is
        left of the position (the stop is placed again by the supervisor, R-10)."""
        position = self.engine.positions.get((order.bot, order.symbol))
        if position is None:
            return
        amount = min(order.amount, position.contracts)
        cid = make_client_order_id(self.engine.env, order.bot, order.symbol, position.side,
                                   f"{order.client_order_id}|again|{now_ms}", f"{order.leg.value}.r")
        again = replace(order, client_order_id=cid, amount=amount, created_ms=now_ms, status=OrderStatus.OPEN,
                        filled=Decimal(0), average=None, reason="", updated_ms=0)
        await self.engine.place_bracket(again)  # a refusal (its target already passed) is recorded by the engine

    # -------------------------------------------------- item 10: stop not filled
    async def check_triggered_stops(self, now_ms: int) -> int:
        """Close the rest of every position whose stop triggered ``grace_ms`` ago and has not
        filled (R-10); returns how many closes were sent."""
        triggered = getattr(self.exchange, "triggered", set())
        engine = self.engine
        closed = 0
        for (bot, symbol) in list(engine.positions):
            stop = engine.stop_of(bot, symbol)
            if stop is None or stop.client_order_id not in triggered or stop.client_order_id in self._handled:
                continue
            since = self._triggered_since.setdefault(stop.client_order_id, now_ms)
            if now_ms - since < self.grace_ms:
                continue
            self._handled.add(stop.client_order_id)
            self.stops_not_filled += 1
            position = engine.positions[(bot, symbol)]
            engine.sink.emit(Alert(
                "STOP_NOT_FILLED", bot, symbol,
                f"the stop-loss triggered {(now_ms - since) / 1000:.0f} s ago and has not filled; closing the "
                f"remaining {position.contracts} contracts at market", "no_stop"))
            try:
                await self.gateway.cancel_order(stop.client_order_id, symbol)
            except ExchangeError as exc:  # triggered orders cannot be cancelled: it stays tracked
                log.info("cancel of the triggered stop %s: %s", stop.client_order_id, exc.reason)
            if await engine.close_position(bot, symbol, ExitReason.NO_STOP) is not None:
                closed += 1
        for cid in list(self._triggered_since):
            if cid not in triggered:
                del self._triggered_since[cid]
        return closed

    # --------------------------------------------- item 11: someone else on the account
    def _bot_of(self, symbol: str) -> str:
        return next((name for name, bot in self.engine.bots.items() if symbol in bot.profile.symbols), "")

    async def position_is_ours(self, bot: str, symbol: str, signed: Decimal, local_signed: Decimal,
                               entry: Decimal) -> bool:
        """For the reconciler: may the exchange's ``signed`` contracts on ``symbol`` be booked as
        ``bot``'s (local ``local_signed``)? Less exposure than ours (a close, a partial close) is
        always ours to repair; more, or the other side, only when the fills that built it are
        all of our orders. Otherwise the incident is reported once and False returned."""
        self._undecided.discard(symbol)
        less = signed == 0 or ((signed > 0) == (local_signed > 0) and local_signed != 0
                               and abs(signed) < abs(local_signed))
        if less:
            self.foreign.pop(symbol, None)
            self.ignored.pop(symbol, None)
            return True
        if symbol in self.adopted:
            self.adopted.discard(symbol)
            return True
        if self.ignored.get(symbol) == signed:
            return False
        explain = getattr(self.exchange, "position_order_ids", None)
        try:
            ids = await explain(symbol, signed) if explain is not None else None
        except OrderNotFound as exc:
            # A fill whose order the exchange cannot show yet (its order service lags): decide at
            # the next pass; nothing is booked meanwhile.
            log.warning("%s: the exchange's position cannot be traced yet (%s); checking again at the next pass",
                        symbol, exc.reason)
            self._undecided.add(symbol)
            return False
        if ids is not None and all(cid.startswith(self.prefixes) for cid in ids):
            self.foreign.pop(symbol, None)
            return True
        previous = self.foreign.get(symbol)
        self.foreign[symbol] = Foreign(symbol, bot, signed, entry, previous.orders if previous else ())
        if previous is None or previous.signed != signed:
            self._pause(bot, symbol)
            others = [cid for cid in (ids or []) if not cid.startswith(self.prefixes)]
            self.engine.sink.emit(Alert(
                "FOREIGN_POSITION", bot, symbol,
                f"the exchange holds {signed} contracts of {symbol}, this bot {local_signed}: the difference comes "
                f"from orders that are not this bot's ({', '.join(others[:3]) or 'fills it cannot trace'}). "
                "It is not booked as ours and entries on the symbol are paused: /playbook someone_else "
                "(adopt, ignore or close).", SOMEONE_ELSE))
        return False

    @property
    def undecided(self) -> int:
        """Symbols whose exchange position the last reconciliation could not trace yet."""
        return len(self._undecided)

    def see_orders(self, open_orders: list[Order]) -> None:
        """For the reconciler: report once every open order on our symbols whose client id has
        none of our prefixes (never cancelled: it is someone else's)."""
        for order in open_orders:
            cid = order.client_order_id
            if cid.startswith(self.prefixes) or cid in self._seen_foreign_orders:
                continue
            self._seen_foreign_orders.add(cid)
            bot = self._bot_of(order.symbol)
            incident = self.foreign.get(order.symbol) or Foreign(order.symbol, bot)
            incident.orders = (*incident.orders, cid)
            self.foreign[order.symbol] = incident
            self.engine.sink.emit(Alert(
                "FOREIGN_ORDER", bot, order.symbol,
                f"an order that is not this bot's rests on {order.symbol}: {order.type.value} {order.side.value} "
                f"{order.amount} ({cid}). Left alone: /playbook someone_else", SOMEONE_ELSE))

    def _pause(self, bot: str, symbol: str) -> None:
        """Pause entries of ``bot`` on ``symbol`` (the order gate refuses them, SYMBOL_PAUSED)."""
        if bot and self.engine.set_paused(bot, symbol, True):
            self._paused.add((bot, symbol))

    def _resume(self, bot: str, symbol: str) -> None:
        """Lift a pause this guard set (a pause the trader set stays)."""
        if (bot, symbol) in self._paused:
            self._paused.discard((bot, symbol))
            self.engine.set_paused(bot, symbol, False)

    async def adopt(self) -> str:
        """Playbook action ADOPT_FOREIGN: every foreign position becomes the bot's (booked with a
        stop-loss at once, SPEC R-10); entries resume on those symbols."""
        done = []
        for symbol, incident in list(self.foreign.items()):
            if incident.signed == 0 or not incident.bot:
                continue
            self.adopted.add(symbol)
            self.ignored.pop(symbol, None)
            await self.engine.repair_position(incident.bot, symbol, incident.signed, incident.entry)
            self._resume(incident.bot, symbol)
            del self.foreign[symbol]
            done.append(f"{symbol} {incident.signed}")
        return ("Adopted and protected by a stop-loss: " + ", ".join(done)) if done else "No foreign position to adopt."

    async def ignore(self) -> str:
        """Playbook action IGNORE_FOREIGN: leave the foreign positions and orders to whoever owns
        them; not reported again while they stay the same; entries stay paused on the symbol."""
        names = []
        for symbol, incident in list(self.foreign.items()):
            self.ignored[symbol] = incident.signed
            names.append(symbol)
            del self.foreign[symbol]
        return ("Ignored (left alone, entries stay paused there): " + ", ".join(names)) if names else "Nothing to ignore."

    async def close_foreign(self) -> str:
        """Playbook action CLOSE_FOREIGN: close each foreign position at market with a
        reduce-only order of ours (never cancels someone else's orders)."""
        now = self.engine.clock.now_ms()
        done = []
        for symbol, incident in list(self.foreign.items()):
            if incident.signed == 0:
                continue
            side = Side.LONG if incident.signed > 0 else Side.SHORT
            market = self.engine.markets[symbol]
            amount = floor_amount(market, abs(incident.signed))
            order = Order(client_order_id=make_client_order_id(self.engine.env, incident.bot or "x", symbol, side,
                                                               f"foreign|{now}", OrderLeg.CLOSE.value),
                          bot=incident.bot, symbol=symbol, side=side.exit_order_side, type=OrderType.MARKET,
                          leg=OrderLeg.CLOSE, amount=amount, reduce_only=True, created_ms=now)
            # Not the engine's order (never booked as ours, never restored from the database);
            # reduce-only, so it can never add exposure.
            await self.gateway.create_untracked(order)
            self.ignored[symbol] = Decimal(0)
            del self.foreign[symbol]
            done.append(f"{symbol} {incident.signed}")
        return ("Closing at market (reduce-only): " + ", ".join(done)) if done else "No foreign position to close."

    def actions(self) -> dict[str, Callable[[], Awaitable[str]]]:
        """The "someone_else" playbook's actions for ``TradingService.exchange_actions`` (T-6)."""
        return {"ADOPT_FOREIGN": self.adopt, "IGNORE_FOREIGN": self.ignore, "CLOSE_FOREIGN": self.close_foreign}

    # -------------------------------------------------------- item 12: daily canary
    async def run_canary(self, now_ms: int) -> bool:
        """Place one far-away reduce-only STOP_MARKET on the first traded symbol, look it up and
        cancel it (issue 13 item 12). True when every step worked; a failing step raises a
        CANARY_FAILED alert naming it. Runs once per UTC day (a failed one too: the alert is the
        signal, not a retry loop)."""
        self.canary_day = utc_day(now_ms)
        self.canary_runs += 1
        symbols = [s for bot in self.engine.bots.values() for s in bot.profile.symbols]
        if not symbols:
            return True
        symbol = symbols[0]
        bot = self._bot_of(symbol)
        market = self.engine.markets[symbol]
        step = "read the price"
        try:
            price = self.engine.mark_price(symbol) or await self.exchange.fetch_last_price(symbol)
            trigger = floor_price(market, price * CANARY_DISTANCE)
            # A sell stop at half the price: valid without a position (Binance checks reduce-only at
            # trigger; reduce-only orders need no minimum notional) and never reached.
            order = Order(client_order_id=make_client_order_id(self.engine.env, bot or "x", symbol, Side.LONG,
                                                               f"canary|{now_ms}|{self.canary_runs}",
                                                               "cnry"),
                          bot=bot, symbol=symbol, side=OrderSide.SELL, type=OrderType.STOP_MARKET,
                          leg=OrderLeg.STOP_LOSS, amount=market.min_qty, reduce_only=True, created_ms=now_ms,
                          trigger_price=trigger)
            step = "place"
            # The same adapter path as every stop, but not an engine order and not recorded in the
            # database; a failed cancel leaves a stray of ours that the reconciliation cancels (O-5).
            await self.gateway.create_untracked(order)
            step = "look up"
            found = await self.gateway.fetch_order(order.client_order_id, symbol)
            if found.status is not OrderStatus.OPEN or found.type is not OrderType.STOP_MARKET:
                raise ExchangeError(f"the canary stop reads back {found.status.value} {found.type.value}")
            step = "cancel"
            await self.gateway.cancel_order(order.client_order_id, symbol)
        except (ExchangeError, OrderNotFound) as exc:
            if step in ("place", "look up"):  # it may rest on the exchange all the same: take it away
                try:
                    await self.gateway.cancel_order(order.client_order_id, symbol)
                except ExchangeError as cancel_exc:
                    log.info("canary cleanup of %s: %s (the reconciliation cancels it)", order.client_order_id,
                             cancel_exc.reason)
            self.canary_failures += 1
            self.last_canary = f"FAILED at '{step}' on {self.canary_day}: {exc.reason}"
            self.engine.sink.emit(Alert(
                "CANARY_FAILED", bot, symbol,
                f"the daily check of conditional orders failed at '{step}': {exc.reason}. Stops may not work on "
                "this venue: check the exchange's API announcements; the canary order (if any) is cancelled at "
                "the next reconciliation.", "no_stop"))
            log.error("canary failed at %s on %s: %s", step, symbol, exc.reason)
            return False
        self.last_canary = f"passed on {self.canary_day} ({symbol}: placed, looked up, cancelled)"
        log.info("canary %s", self.last_canary)
        return True

    # ------------------------------------------------------------- reporting
    def status_lines(self) -> list[str]:
        """What /runtime and the build card say about the venue (empty when nothing to say)."""
        lines = []
        # The note is about Binance's demo environment; on another venue (OKX) only cancels seen say anything.
        binance = getattr(self.exchange, "exchange_id", "binanceusdm") == "binanceusdm"
        if self.mode == "demo" and binance:
            lines.append(f"{DEMO_VENUE_NOTE} ({self.venue_cancels} so far this run)")
        elif self.venue_cancels:
            lines.append(f"the venue cancelled {self.venue_cancels} stop(s) on its own; placed again")
        if self.canary:
            lines.append(f"daily canary: {self.last_canary or 'not run yet'}")
        if self.stops_not_filled:
            lines.append(f"stops triggered but not filled, closed at market: {self.stops_not_filled}")
        if self.foreign:
            lines.append("someone else on the account: " + ", ".join(sorted(self.foreign)) + " (/playbook someone_else)")
        return lines
