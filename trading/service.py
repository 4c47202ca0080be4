"""TradingService: the RPC facade between the core and the chat (STYLE: freqtrade's RPC).

Chat handlers call one method and render its typed result (``trading.views``); they never
compute. Live numbers come from the engine, history from the repositories.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from trading.engine import DAY_MS, Engine
from trading.errors import UnknownSymbol
from trading.models import ZERO
from trading.presets import effective_limits
from trading.reports import build_report
from trading.risk import daily_loss_pct, trading_state
from trading.views import (
    BotRisk,
    PeriodReport,
    PositionView,
    RiskReport,
    Summary,
    SymbolRisk,
)

HUNDRED = Decimal(100)


class TradingService:
    """Facade over the engine and the repositories.

    Args:
        engine: the running engine (live state).
        store: the storage facade (``storage.Storage``): positions, equity, pauses repositories.
        mode: "paper" | "demo" | "live".
    """

    def __init__(self, engine: Engine, store: Any, mode: str = "paper") -> None:
        self._engine = engine
        self._store = store
        self.mode = mode
        self.quote = engine.config.account.quote

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
        """Open positions with mark price, unrealised PnL and brackets (SPEC T-2 /open)."""
        engine = self._engine
        views = []
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
                )
            )
        return views

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
        streak_limit = effective_limits(
            engine.config.preset, worst.profile, balance + unrealised, engine.closed_trades
        ).sl_streak_limit
        if self.mode == "paper":
            realised_total = balance - engine.config.account.starting_balance
        else:
            # On an exchange account the balance did not start at the paper starting balance:
            # the bot's realised result is the sum of its closed trades.
            realised_total = sum((p.net_pnl for p in await self._store.positions.list_closed()), ZERO)
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
            limits = effective_limits(engine.config.preset, runtime.profile, equity, engine.closed_trades)
            bots.append(BotRisk(
                bot=name,
                open_positions=sum(1 for (b, _s) in engine.positions if b == name),
                max_positions=limits.max_positions,
                sl_streak=state.sl_streak if state else 0,
                sl_streak_limit=limits.sl_streak_limit,
                trades_today=state.trades_today if state else 0,
                profit_factor_today=state.profit_factor_today if state else None,
                halted_reason=state.halted_reason if state else "",
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
            state_reason=halted or ("DRAWDOWN_PAUSE" if stage == "PAUSE" else ""),
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
        async with self._store.transaction():
            for bot, symbol in pairs:
                if paused:
                    await self._store.pauses.pause(bot, symbol, now)
                    engine.paused.setdefault(bot, set()).add(symbol)
                else:
                    await self._store.pauses.resume(bot, symbol)
                    engine.paused.setdefault(bot, set()).discard(symbol)

    # ------------------------------------------------------------ control
    async def paused_symbols(self) -> set[str]:
        """Symbols paused for entries (SPEC R-7), across bots."""
        paused: set[str] = set()
        for symbols in self._engine.paused.values():
            paused |= symbols
        return paused

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

    async def period_report(self, title: str, start_ms: int, end_ms: int) -> PeriodReport:
        """Report over [start_ms, end_ms) from the stored trades and equity samples."""
        trades = await self._store.positions.list_closed(since_ms=start_ms, until_ms=end_ms)
        curve = await self._store.equity.list(since_ms=start_ms, until_ms=end_ms)
        current = self._engine.equity()
        now = self._engine.clock.now_ms()
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
        )

    async def report_chart(self, report: PeriodReport) -> bytes:
        """PNG of the report's equity curve and per-trade PnL, rendered off the event loop."""
        from trading.charts import render_report_chart

        return await asyncio.to_thread(render_report_chart, report)

