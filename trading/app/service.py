"""TradingService: the RPC facade between the core and the chat (STYLE: freqtrade's RPC).

Chat handlers call one method and render its typed result (``trading.domain.views``); they never
compute. Live numbers come from the engine, history from the repositories.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from trading.domain.audit import AuditStatus, entries_for_events
from trading.engine.core import DAY_MS, Engine
from trading.domain.errors import OptiFlowError, UnknownSymbol
from trading.domain.liquidation import distance_pct
from trading.domain.events import Alert, CommandIssued
from trading.domain.models import ZERO, ExitReason, OrderLeg, Side
from trading.domain.monitor import MonitorLimits, MonitorSnapshot, WatchedPosition, detect, diff
from trading.domain.reasons import UNLIFTABLE_STOPS, DrawdownStage, ReasonCode
from trading.domain.kpi import Kpis, compute_kpis, kpi_report
from trading.domain.reports import build_report
from trading.domain.sizing import EQUITY_TIERS
from trading.domain.risk import daily_loss_pct, drawdown_threshold, trading_state
from trading.domain.views import (
    AccountRiskView,
    BotRisk,
    CloseResult,
    PeriodReport,
    PositionView,
    RiskReport,
    RuntimeInfo,
    Summary,
    SymbolRisk,
)

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)
ACCOUNT = "account"  # the name /resume lifts the account-level R-5 drawdown pause under
CONFIRM_TTL_MS = 60_000  # a dangerous action's confirm button works this long (SPEC T-3)


def _utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def wall_ms() -> int:
    """Wall-clock epoch ms UTC (confirmations and uptime are about the trader's time, not the
    replay's)."""
    return int(time.time() * 1000)


class LoopTimings:
    """Wall time per loop iteration (ms), over the last ``window`` iterations (SPEC T-2
    /runtime "loop timings"). ``record`` is the replay's ``on_frame`` callback."""

    def __init__(self, window: int = 1000) -> None:
        from collections import deque

        self._samples: deque[float] = deque(maxlen=window)

    def record(self, elapsed_ms: float) -> None:
        """Add one iteration's duration in ms."""
        self._samples.append(elapsed_ms)

    def stats(self) -> tuple[float | None, float | None]:
        """(average, maximum) in ms over the window; (None, None) before the first iteration."""
        if not self._samples:
            return None, None
        return sum(self._samples) / len(self._samples), max(self._samples)


class TradingService:
    """Facade over the engine and the repositories.

    Args:
        engine: the running engine (live state).
        store: the storage facade (``storage.Storage``): positions, equity, pauses repositories.
        mode: "paper" | "demo" | "live".
        config_id: the config snapshot id that audit records of manual commands cite (A-1).
        wall_clock: epoch ms UTC now (wall time) for confirmations and uptime; tests inject one.
        price_proxies: symbol → the symbol whose candles stand in for its prices (SPEC S-6,
            paper on USDC perps without USDC candles); every report labels them "proxy".
        venue_positions: awaitable list of the exchange's positions with its liquidation prices
            (demo/live: ``CcxtExchange.fetch_position_details``); None = estimate them.
        next_funding: symbol → awaitable (rate fraction, epoch ms UTC) of the next funding, or
            None when unknown (paper: the bundled funding events; demo/live: the exchange).
    """

    def __init__(
        self, engine: Engine, store: Any, mode: str = "paper", config_id: str = "",
        wall_clock: Callable[[], int] = wall_ms, price_proxies: dict[str, str] | None = None,
        venue_positions: Callable[[], Awaitable[list]] | None = None,
        next_funding: Callable[[str], Awaitable[tuple[Decimal, int] | None]] | None = None,
    ) -> None:
        self.venue_positions = venue_positions
        self.next_funding = next_funding
        self.price_proxies: dict[str, str] = dict(price_proxies or {})
        self._engine = engine
        self._store = store
        self._closed_cache: tuple[tuple[int, int], tuple[Decimal, list[Decimal]]] | None = None
        self.mode = mode
        self.config_id = config_id  # config snapshot cited by audit records (SPEC A-1)
        self.quote = engine.config.account.quote
        self.wall_clock = wall_clock
        self.started_ms = wall_clock()
        self.feed_state = "starting"  # set by the runtime: "replaying", "replay finished", ...
        self.feed_stale = False  # set by the runtime when the market feed stops moving (M-1)
        self.loop_timings = LoopTimings()  # fed by the candle loop (replay ``on_frame``)
        # Playbook actions that need a real exchange (T-6: "REPLACE_STOPS", "RECONCILE"): the
        # demo/live runtime registers them; each returns a one-line result for the chat.
        self.exchange_actions: dict[str, Callable[[], Awaitable[str]]] = {}

    # ------------------------------------------------------------ symbols
    def symbols(self) -> tuple[str, ...]:
        """Every configured symbol (ccxt unified), in config order."""
        return self._engine.config.all_symbols()

    def resolve_symbol(self, text: str) -> str:
        """Map what a trader types ("btc", "BTCUSDT", "BTC/USDT:USDT") to a configured symbol.

        Raises:
            UnknownSymbol: nothing configured matches.
        """
        wanted = text.strip().upper().replace("/", "").replace(":", "").replace("-", "")
        for symbol in self.symbols():
            market = symbol.upper()
            base, quote = market.split("/")[0], market.split("/")[1].split(":")[0]
            if wanted in (base, base + quote, market.replace("/", "").replace(":", "")):
                return symbol
        raise UnknownSymbol(f"Unknown symbol: {text.strip()[:32]}")

    # ------------------------------------------------------------- status
    async def open_positions(self) -> list[PositionView]:
        """Open positions with mark price, unrealised PnL, brackets, the liquidation price and
        its distance, and the next funding (SPEC T-2 /open)."""
        engine = self._engine
        views = []
        reported: dict[str, Decimal] = {}
        if self.venue_positions is not None and engine.positions:
            try:
                reported = {p.symbol: p.liquidation_price for p in await self.venue_positions()
                            if p.liquidation_price is not None}
            except OptiFlowError as exc:  # the exchange did not answer: estimate instead
                log.warning("liquidation prices not read from the exchange: %s", exc)
        for position in sorted(engine.positions.values(), key=lambda p: (p.opened_ms, p.symbol)):
            market = engine.markets[position.symbol]
            mark = engine.mark_price(position.symbol) or position.entry_price
            pnl = position.unrealised_pnl(mark, market.contract_size)
            margin = position.margin(market.contract_size)
            views.append(
                PositionView(
                    position_id=position.position_id,
                    bot=position.bot,
                    symbol=position.symbol,
                    side=position.side,
                    contracts=position.contracts,
                    entry_price=position.entry_price,
                    mark_price=mark,
                    unrealised_pnl=pnl,
                    pnl_pct_on_margin=pnl / margin * HUNDRED if margin > 0 else ZERO,
                    notional=position.notional(mark, market.contract_size),
                    margin=margin,
                    stop_loss=position.stop_loss,
                    take_profit_1=position.take_profit_1,
                    take_profit_2=position.take_profit_2,
                    tp1_done=position.tp1_done,
                    opened_ms=position.opened_ms,
                    **await self._liquidation_and_funding(position, mark, market.contract_size, reported),
                )
            )
        return views

    async def _liquidation_and_funding(self, position, mark: Decimal, contract_size: Decimal,
                                       reported: dict[str, Decimal]) -> dict:
        """The liquidation price (the exchange's when it reported one, else the estimate from
        the maintenance-margin brackets), its distance from the mark, and the next funding with
        what this position receives (+) or pays (−) at it: −side × rate × notional."""
        liquidation, source = reported.get(position.symbol), "exchange"
        if liquidation is None:
            liquidation, source = self._engine.liquidation_price(position), "estimate"
        out: dict = {}
        if liquidation is not None:
            out.update(liquidation_price=liquidation, liquidation_source=source,
                       liquidation_distance_pct=distance_pct(mark, liquidation))
        if self.next_funding is not None:
            try:
                upcoming = await self.next_funding(position.symbol)
            except OptiFlowError as exc:
                log.warning("next funding of %s not read: %s", position.symbol, exc)
                upcoming = None
            if upcoming is not None:
                rate, when = upcoming
                out.update(next_funding_rate=rate, next_funding_ms=when,
                           next_funding_amount=-position.side.sign * rate * position.notional(mark, contract_size))
        return out

    async def summary(self) -> Summary:
        """Balance, equity, risk state and open positions (SPEC T-2 /summary)."""
        engine = self._engine
        positions = await self.open_positions()
        unrealised = sum((p.unrealised_pnl for p in positions), ZERO)
        balance = engine.account.balance if engine.account else ZERO
        states = list(engine.risk_states.values())
        halted = next((s.halted_reason for s in states if s.halted_reason), "")
        day_start = states[0].day_start_equity if states else balance
        realised_today = sum((s.realised_today for s in states), ZERO)
        # The bot closest to its R-2 stop, with the limit its preset really applies (Z-4).
        worst = max(engine.bots.values(), key=lambda b: getattr(engine.risk_states.get(b.name), "sl_streak", 0))
        worst_state = engine.risk_states.get(worst.name)
        streak_limit = engine.limits(worst.profile, balance + unrealised).sl_streak_limit
        if self.mode == "paper":
            realised_total = balance - engine.config.account.starting_balance
        else:
            # On an exchange account the balance did not start at the paper starting balance:
            # the bot's realised result is the sum of its closed trades.
            realised_total = (await self._closed_figures())[0]
        return Summary(
            mode=self.mode,
            quote=self.quote,
            balance=balance,
            equity=balance + unrealised,
            unrealised_pnl=unrealised,
            realised_pnl_total=realised_total,
            trading_state=trading_state(halted, engine.drawdown_stage()),
            state_reason=halted,
            sl_streak=worst_state.sl_streak if worst_state else 0,
            sl_streak_limit=streak_limit,
            daily_loss_used_pct=daily_loss_pct(realised_today + unrealised, day_start),
            daily_loss_limit_pct=engine.config.account.daily_loss_limit_pct,
            positions=tuple(positions),
            paused_symbols=tuple(sorted(await self.paused_symbols())),
            closed_trades=await self._store.positions.count_closed(),
            clock_ms=engine.clock.now_ms(),
            account_risk=await self.account_risk(),
        )

    async def promotion_gate(self):
        """SPEC S-7: the live promotion gate on this database's demo record (a
        :class:`~trading.domain.promotion.GateResult`)."""
        from trading.app.promotion import demo_gate

        return await demo_gate(self._store, (await self._closed_figures())[1])

    async def _closed_figures(self) -> tuple[Decimal, list[Decimal]]:
        """(sum of every closed trade's net PnL, the S-7 demo trades' nets), in quote; derived
        again only after the orders or positions tables were written (a /summary with 10,000
        trades would otherwise reread them all on every call)."""
        store = self._store
        key = (store.orders.revision, store.positions.revision)
        if self._closed_cache is None or self._closed_cache[0] != key:
            from trading.app.promotion import demo_trade_nets

            trades = await store.positions.closed_results()
            total = sum((t.net_pnl for t in trades), ZERO)
            self._closed_cache = (key, (total, await demo_trade_nets(store, trades)))
        return self._closed_cache[1]

    async def account_risk(self) -> AccountRiskView:
        """The account-level risk lines (SPEC Z-4 tier, Z-5 launch stage, R-5 drawdown stage,
        R-3 limits, R-9 holds, S-7 gate) for /risk, /summary and the build card."""
        engine = self._engine
        rules = engine.config.account
        equity = engine.equity()
        peak = max(engine.account.peak_equity if engine.account else equity, equity)
        risk = engine.risk
        anchor = risk.account.pause_anchor
        pause_base = peak if anchor is None else min(anchor, peak)
        launch = engine.config.preset == "launch"
        stage = risk.ramp.current
        held = []
        for runtime in engine.bots.values():
            limits = engine.limits(runtime.profile, equity)
            if limits.capped:
                why = "losing streak" if risk.account.loss_streak else "equity below its peak"
                held.append(f"{runtime.name}: risk {limits.risk_pct} %, {limits.leverage}× ({why})")
        gate = await self.promotion_gate()
        return AccountRiskView(
            tier=risk.tier(equity).name,
            tier_hysteresis_pct=rules.tier_hysteresis_pct,
            launch_stage=stage.number if launch else 0,
            launch_limits=(f"{stage.max_positions} position(s) at {stage.risk_pct} % risk, up to {stage.leverage}×"
                           if launch else ""),
            launch_next=risk.ramp.next_step() if launch else "",
            drawdown_stage=engine.drawdown_stage(equity).value,
            drawdown_paused=risk.account.drawdown_paused,
            reduce_at=peak - drawdown_threshold(peak, rules.drawdown_reduce_pct, rules.drawdown_reduce_quote),
            pause_at=pause_base - drawdown_threshold(pause_base, rules.drawdown_pause_pct, rules.drawdown_pause_quote),
            daily_loss_limit_pct=rules.daily_loss_limit_pct,
            daily_loss_hard_limit_pct=rules.daily_loss_hard_limit_pct,
            hard_limit_hit=risk.account.hard_stop_day == _utc_day(engine.clock.now_ms()),
            held_by_r9="; ".join(held),
            gate=gate.line(),
            gate_passed=gate.passed,
        )

    def bot_names(self) -> tuple[str, ...]:
        """The configured bots, in config order (SPEC B-1)."""
        return tuple(self._engine.bots)

    def resolve_bot(self, text: str) -> str | None:
        """The configured bot named ``text`` (case-insensitive), or None."""
        wanted = text.strip().lower()
        return next((name for name in self._engine.bots if name.lower() == wanted), None)

    async def risk_report(self, bot: str | None = None) -> RiskReport:
        """RiskGuard state for /risk (SPEC R-1..R-7), optionally of one bot.

        Raises:
            UnknownSymbol: ``bot`` is not a configured bot name.
        """
        engine = self._engine
        if bot is not None and bot not in engine.bots:
            raise UnknownSymbol(f"Unknown bot: {bot[:32]} (bots: {', '.join(engine.bots)})")
        equity = engine.equity()
        peak = max(engine.account.peak_equity if engine.account else equity, equity)
        states = engine.risk_states
        halted = next((s.halted_reason for s in states.values() if s.halted_reason), "")
        stage = engine.drawdown_stage(equity)
        realised = sum((s.realised_today for s in states.values()), ZERO)
        day_start = next(iter(states.values())).day_start_equity if states else equity
        bots = []
        for name, runtime in engine.bots.items():
            if bot is not None and name != bot:
                continue
            state = states.get(name)
            limits = engine.limits(runtime.profile, equity)
            bots.append(BotRisk(
                bot=name,
                open_positions=sum(1 for (b, _s) in engine.positions if b == name),
                max_positions=limits.max_positions,
                sl_streak=state.sl_streak if state else 0,
                sl_streak_limit=limits.sl_streak_limit,
                trades_today=state.trades_today if state else 0,
                profit_factor_today=state.profit_factor_today if state else None,
                halted_reason=state.halted_reason if state else "",
                risk_pct=limits.risk_pct,
                leverage=limits.leverage,
            ))
        symbols = []
        for name, runtime in engine.bots.items():
            if bot is not None and name != bot:
                continue
            for symbol in runtime.profile.symbols:
                entry = engine.blacklist.get((name, symbol))
                blocked = entry.blocked_until_ms if entry else None
                symbols.append(SymbolRisk(
                    bot=name,
                    symbol=symbol,
                    stop_losses=entry.stop_losses if entry else 0,
                    blocked_until_ms=blocked if blocked is not None and blocked > engine.clock.now_ms() else None,
                    paused=symbol in engine.paused.get(name, ()),
                    blacklist_limit=runtime.profile.blacklist_stop_losses,
                ))
        return RiskReport(
            trading_state=trading_state(halted, stage),
            state_reason=halted or (ReasonCode.DRAWDOWN_PAUSE if stage is DrawdownStage.PAUSE else ""),
            account_risk=await self.account_risk(),
            equity=equity,
            peak_equity=peak,
            drawdown_pct=(peak - equity) / peak * HUNDRED if peak > 0 else ZERO,
            drawdown_quote=peak - equity,
            drawdown_stage=stage,
            daily_loss_used_pct=daily_loss_pct(realised + engine.unrealised_pnl(), day_start),
            daily_loss_limit_pct=engine.config.account.daily_loss_limit_pct,
            bots=tuple(bots),
            symbols=tuple(symbols),
            clock_ms=engine.clock.now_ms(),
            drawdown_risk_multiplier=engine.config.account.drawdown_risk_multiplier,
        )

    async def set_bot_paused(self, bot: str, paused: bool) -> None:
        """Pause or resume every symbol of one bot (SPEC R-7 "per bot"); persisted.

        Raises:
            UnknownSymbol: ``bot`` is not a configured bot name.
        """
        engine = self._engine
        if bot not in engine.bots:
            raise UnknownSymbol(f"Unknown bot: {bot[:32]} (bots: {', '.join(engine.bots)})")
        await self._apply_pauses([(bot, symbol) for symbol in engine.bots[bot].profile.symbols], paused)

    async def _apply_pauses(self, pairs: list[tuple[str, str]], paused: bool) -> None:
        """Persist and apply pause flags for (bot, symbol) pairs in one transaction (R-7)."""
        engine = self._engine
        now = engine.clock.now_ms()
        command = "pause" if paused else "resume"
        async with self._store.transaction():
            for bot, symbol in pairs:
                await self.record_command(command, bot=bot, symbol=symbol)  # SPEC A-1, same transaction
                if paused:
                    await self._store.pauses.pause(bot, symbol, now)
                else:
                    await self._store.pauses.resume(bot, symbol)
                engine.set_paused(bot, symbol, paused)

    # ------------------------------------------------------------ control
    async def paused_symbols(self) -> set[str]:
        """Symbols paused for entries (SPEC R-7), across bots."""
        paused: set[str] = set()
        for symbols in self._engine.paused.values():
            paused |= symbols
        return paused

    async def bot_pause_states(self) -> dict[str, bool]:
        """Per bot: True when every one of its symbols is paused (SPEC R-7 per bot)."""
        engine = self._engine
        return {
            name: set(bot.profile.symbols) <= engine.paused.get(name, set()) for name, bot in engine.bots.items()
        }

    async def pause_all(self, paused: bool = True) -> tuple[str, ...]:
        """Pause (or resume) entries on every symbol of every bot in one transaction (SPEC R-7
        "everything", T-6 "pause all"); returns the symbols."""
        engine = self._engine
        await self._apply_pauses(
            [(name, symbol) for name, bot in engine.bots.items() for symbol in bot.profile.symbols], paused
        )
        return self.symbols()

    async def set_paused(self, symbol: str, paused: bool) -> None:
        """Pause or resume entries on ``symbol`` for every bot trading it; persisted (R-7).

        Raises:
            UnknownSymbol: the symbol is not configured.
        """
        if symbol not in self.symbols():
            raise UnknownSymbol(f"Unknown symbol: {symbol[:32]}")
        bots = [b.name for b in self._engine.bots.values() if symbol in b.profile.symbols]
        await self._apply_pauses([(bot, symbol) for bot in bots], paused)

    # ---------------------------------------------------------- analytics
    async def daily_report(self, day: date | None = None) -> PeriodReport:
        """Report of one UTC day (SPEC T-5); ``None`` = the day of the engine clock."""
        now = self._engine.clock.now_ms()
        if day is None:
            day = datetime.fromtimestamp(now / 1000, tz=timezone.utc).date()
        start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
        return await self.period_report(f"Daily report {day.isoformat()} (UTC)", start, start + DAY_MS)

    async def period_report(self, title: str, start_ms: int, end_ms: int, *,
                            start_equity: Decimal | None = None) -> PeriodReport:
        """Report over [start_ms, end_ms) from the stored trades and equity samples, with the
        T-5 KPIs against the §11 targets of the tier in force and beside the previous tier's
        figures (over its whole time in that tier), and funding per symbol.
        ``start_equity``: the equity the period started from (quote; default the first
        sample's)."""
        report = await self._bare_report(title, start_ms, end_ms, start_equity)
        engine = self._engine
        tier = engine.risk.tier(engine.equity())
        history = engine.risk.account.tier_history
        previous = previous_name = None
        if len(history) >= 2:
            (since, previous_name), (until, _current) = history[-2], history[-1]
            before = await self._bare_report("previous tier", since, until, None)
            previous = await self._kpis(before, since, until)
        kpis = kpi_report(await self._kpis(report, start_ms, end_ms), tier.name, EQUITY_TIERS.index(tier),
                          previous, previous_name or "")
        funding: dict[str, Decimal] = {}
        for trade in report.trades:
            funding[trade.symbol] = funding.get(trade.symbol, ZERO) + trade.funding
        return replace(report, kpis=kpis, funding_by_symbol=tuple(sorted((s, a) for s, a in funding.items() if a)))

    async def _bare_report(self, title: str, start_ms: int, end_ms: int, start_equity: Decimal | None) -> PeriodReport:
        trades = await self._store.positions.list_closed(since_ms=start_ms, until_ms=end_ms)
        curve = await self._store.equity.list(since_ms=start_ms, until_ms=end_ms)
        current = self._engine.equity()
        now = self._engine.clock.now_ms()
        if start_equity is None:
            start_equity = curve[0].equity if curve else current
        end_equity = current if start_ms <= now < end_ms or not curve else curve[-1].equity
        return build_report(
            title=title,
            start_ms=start_ms,
            end_ms=end_ms,
            trades=trades,
            equity_curve=curve,
            start_equity=start_equity,
            end_equity=end_equity,
            price_proxies=tuple(sorted(self.price_proxies.items())),
        )

    async def _kpis(self, report: PeriodReport, start_ms: int, end_ms: int) -> Kpis:
        """SPEC T-5 KPIs of ``report`` (margins from the fills of its trades)."""
        since = min((t.opened_ms for t in report.trades), default=start_ms)
        fills = [f for f in await self._store.fills.list(since_ms=since) if f.timestamp <= end_ms]
        end = min(end_ms, max(self._engine.clock.now_ms(), start_ms + 1))
        return compute_kpis(trades=report.trades, fills=fills, start_ms=start_ms, end_ms=end,
                            equities=[s.equity for s in report.equity_curve] or [report.start_equity],
                            start_equity=report.start_equity, max_drawdown_pct=report.max_drawdown_pct,
                            contract_sizes={s: m.contract_size for s, m in self._engine.markets.items()})

    async def report_chart(self, report: PeriodReport) -> bytes:
        """PNG of the report's equity curve and per-trade PnL, rendered off the event loop."""
        from trading.adapters.charts import render_report_chart

        return await asyncio.to_thread(render_report_chart, report)

    # -------------------------------------------------------------- audit
    async def record_command(self, command: str, *, bot: str = "", symbol: str = "", why: dict | None = None) -> None:
        """Append a manual command's audit record (SPEC A-1), e.g. ``record_command("close",
        bot="main", symbol="BTC/USDT:USDT", why={"user": 123})``. Call it inside the
        ``store.transaction()`` of the state change it describes, so both commit together; the
        order and fill records of what the command causes come from the engine's events.
        ``why`` holds plain values only (no secrets)."""
        entries = entries_for_events([CommandIssued(self._engine.clock.now_ms(), command, bot, symbol, "chat", why or {})])
        await self._store.audit.append(entries, self.config_id)

    async def audit_status(self, limit: int = 8) -> AuditStatus:
        """The last ``limit`` audit records and the verification of the whole chain (SPEC A-1,
        /audit)."""
        store = self._store
        return AuditStatus(await store.audit.verify(), tuple(await store.audit.last(limit)))

    # ------------------------------------------------------ manual closes
    async def close_position(self, symbol: str) -> list[CloseResult]:
        """Close every bot's position on ``symbol`` at market, reduce-only (SPEC T-2 /close).

        Returns the closes sent (empty: no open position, or its close is already on its way).

        Raises:
            UnknownSymbol: the symbol is not configured.
            ExchangeError: the exchange refused the order (its reason is the message).
        """
        if symbol not in self.symbols():
            raise UnknownSymbol(f"Unknown symbol: {symbol[:32]}")
        results = []
        for (bot, held), position in list(self._engine.positions.items()):
            if held != symbol:
                continue
            order = await self._engine.close_position(bot, symbol, ExitReason.MANUAL)
            if order is not None:
                results.append(CloseResult(bot, symbol, position.side, order.amount, order.client_order_id))
        return results

    async def close_all(self) -> list[CloseResult]:
        """Close every open position at market, reduce-only (SPEC T-2 /closeall)."""
        results = []
        for symbol in sorted({s for (_b, s) in self._engine.positions}):
            results.extend(await self.close_position(symbol))
        return results

    def halted_bots(self) -> dict[str, str]:
        """Bots stopped for the day by a risk rule, with the reason code (R-2..R-4)."""
        return {name: s.halted_reason for name, s in self._engine.risk_states.items() if s.halted_reason}

    def liftable_stops(self) -> dict[str, str]:
        """The risk stops a confirmed /resume may lift (SPEC T-1): bots stopped for the day by
        R-2, R-3's daily limit or R-4, and — as ``account`` — the latched R-5 drawdown pause.
        The R-3 hard limit is not among them: it holds to the next UTC day."""
        stops = {bot: reason for bot, reason in self.halted_bots().items() if reason not in UNLIFTABLE_STOPS}
        if self._engine.risk.account.drawdown_paused:
            stops[ACCOUNT] = ReasonCode.DRAWDOWN_PAUSE.value
        return stops

    async def clear_risk_stops(self, bots: "Iterable[str] | None" = None) -> dict[str, str]:
        """Lift the day stop of ``bots`` (default: every bot) by hand — the trader confirmed
        it, SPEC T-1; ``account`` among them lifts the latched R-5 drawdown pause. Each lift is
        audited as a command (A-1). Returns what was lifted (bot or ``account`` → reason)."""
        engine = self._engine
        lifted = {}
        for bot in list(engine.risk_states if bots is None else bots):
            if bot == ACCOUNT:
                if engine.resume_drawdown():
                    lifted[ACCOUNT] = ReasonCode.DRAWDOWN_PAUSE.value
                continue
            reason = engine.clear_risk_stop(bot)
            if reason:
                lifted[bot] = reason
        if lifted:
            async with self._store.transaction():
                for name, reason in lifted.items():
                    await self.record_command("lift_risk_stop", bot="" if name == ACCOUNT else name,
                                              why={"reason": reason})
        return lifted

    # ------------------------------------------------------ confirmations
    async def request_confirmation(self, user_id: int, action: str, argument: str = "") -> int:
        """Store a dangerous action to confirm within 60 s; returns its id for the button
        (SPEC T-1, T-3: the callback data carries only this id)."""
        confirmation = await self._store.confirmations.create(
            user_id, action, argument, self.wall_clock(), CONFIRM_TTL_MS
        )
        return confirmation.id

    async def take_confirmation(self, confirmation_id: int, user_id: int) -> tuple[str, str] | str:
        """Consume a confirmation: ``(action, argument)`` when it is this user's, unexpired and
        unused; otherwise the reason it cannot run ("expired", "unknown", "used")."""
        confirmation = await self._store.confirmations.get(confirmation_id)
        if confirmation is None or confirmation.user_id != user_id:
            return "unknown"
        now = self.wall_clock()
        if confirmation.used_ms is not None:
            return "used"
        if now >= confirmation.expires_ms:
            return "expired"
        if not await self._store.confirmations.use(confirmation_id, now):
            return "used"
        return confirmation.action, confirmation.argument

    async def cancel_confirmation(self, confirmation_id: int, user_id: int) -> bool:
        """Mark a confirmation used without running it (the trader tapped Cancel); False when
        it is not this user's or was already used."""
        confirmation = await self._store.confirmations.get(confirmation_id)
        if confirmation is None or confirmation.user_id != user_id:
            return False
        return await self._store.confirmations.use(confirmation_id, self.wall_clock())

    # ------------------------------------------------------------ runtime
    def runtime_info(self) -> RuntimeInfo:
        """Uptime, mode, feed state and loop timings (SPEC T-2 /runtime)."""
        engine = self._engine
        loop_avg, loop_max = self.loop_timings.stats()
        return RuntimeInfo(
            mode=self.mode,
            uptime_s=max(0, (self.wall_clock() - self.started_ms) // 1000),
            clock_ms=engine.clock.now_ms(),
            feed_state=self.feed_state,
            feed_stale=self.feed_stale,
            symbols=self.symbols(),
            open_positions=len(engine.positions),
            open_orders=len(engine.open_orders),
            loop_avg_ms=loop_avg,
            loop_max_ms=loop_max,
        )

    # ------------------------------------------------------------ monitor
    def monitor_snapshot(self, now_ms: int, recent_errors: int) -> MonitorSnapshot:
        """What the monitor checks (SPEC M-1), read from the engine and the exchange at ``now_ms``
        (epoch ms UTC, the caller's clock); ``recent_errors`` from the log window."""
        engine = self._engine
        states = list(engine.risk_states.values())
        day_start = states[0].day_start_equity if states else engine.equity()
        realised = sum((s.realised_today for s in states), ZERO)
        stops = {(o.bot, o.symbol) for o in engine.open_orders.values() if o.leg is OrderLeg.STOP_LOSS}
        local: dict[str, Decimal] = {}
        for position in engine.positions.values():
            signed = position.contracts if position.side is Side.LONG else -position.contracts
            local[position.symbol] = local.get(position.symbol, ZERO) + signed
        exchange_position = getattr(engine.exchange, "position", None)  # the simulated exchange's view
        remote = None
        if exchange_position is not None:
            remote = {}
            for symbol in self.symbols():
                held = exchange_position(symbol)
                if held is not None and held[0] != 0:
                    remote[symbol] = held[0]
        return MonitorSnapshot(
            now_ms=now_ms,
            daily_loss_pct=daily_loss_pct(realised + engine.unrealised_pnl(), day_start),
            sl_streaks={name: s.sl_streak for name, s in engine.risk_states.items()},
            positions=tuple(
                WatchedPosition(p.bot, p.symbol, p.opened_ms, (p.bot, p.symbol) in stops)
                for p in engine.positions.values()
            ),
            recent_errors=recent_errors,
            feed_stale=self.feed_stale,
            local_contracts=local,
            exchange_contracts=remote,
            recent_nets=tuple(engine.risk.recent_nets),
            tier_index=EQUITY_TIERS.index(engine.risk.tier(engine.equity())),
        )

    async def run_monitor(
        self, now_ms: int | None = None, recent_errors: int = 0, limits: MonitorLimits = MonitorLimits()
    ) -> list[Alert]:
        """One monitor pass (SPEC M-1), meant for every minute: returns the alerts of incidents
        that are NEW — each incident alerts once, and a restart does not alert again because
        open incidents are kept in SQLite; incidents whose condition cleared are closed. The
        alerts are also emitted to the engine's event sink (for the notifier).

        Args:
            now_ms: epoch ms UTC of this pass (default: the engine clock).
            recent_errors: ERROR lines in the recent log window.
        """
        now = self._engine.clock.now_ms() if now_ms is None else now_ms
        found = detect(self.monitor_snapshot(now, recent_errors), limits)
        incidents = self._store.incidents
        new, cleared = diff((await incidents.list_open()).keys(), found)
        async with self._store.transaction():
            for incident in new:
                await incidents.open(incident.key, incident.kind, incident.playbook, incident.text, now)
            for key in cleared:
                await incidents.close(key, now)
        alerts = [Alert(i.kind, i.bot, i.symbol, i.text, i.playbook) for i in new]
        for alert in alerts:
            self._engine.sink.emit(alert)
        return alerts
