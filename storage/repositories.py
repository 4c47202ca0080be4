"""Repositories: domain objects of :mod:`trading.domain.models` in, domain objects out — never rows.

Every write joins the caller's ``transaction()`` if there is one, else runs in its own short
transaction. Decimals are stored as ``str(Decimal)`` and read back with ``Decimal(text)`` (exact);
enums as ``.value``; booleans as 0/1; times are epoch ms UTC. Time ranges are ``since``
inclusive, ``until`` exclusive. Errors: ``TypeError`` when a money/quantity field holds a float;
SQLite errors (``sqlite3.Error``) propagate.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from storage.db import Database
from trading.domain.errors import OptiFlowError
from trading.app.analytics import (
    SCORE_BELOW_MIN,
    BlockerCount,
    MissedSymbol,
    SymbolBlockerCount,
    SymbolSignalStats,
    percent,
)
from trading.domain.audit import (
    BALANCE,
    GENESIS,
    POSITION,
    AuditEntry,
    AuditRecord,
    Verification,
    chain,
    check_ledger,
    position_state,
    sha256_hex,
    verify,
)
from trading.domain.models import (
    Account,
    EquitySnapshot,
    ExitReason,
    Fill,
    Order,
    OrderLeg,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    RiskState,
    Side,
    SignalEvaluation,
    SymbolBlacklist,
    TradeResult,
)

_SIDES = {side.value: side for side in Side}  # a dict look-up: Side(text) is ~10× slower


def dec_in(value: Decimal | int) -> str:
    """``str(Decimal)`` for a TEXT column. Raises TypeError for floats (money never via float)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(Decimal(value))
    raise TypeError(f"expected Decimal, got {type(value).__name__}: {value!r}")


def opt_dec_in(value: Decimal | None) -> str | None:
    """:func:`dec_in`, passing ``None`` through."""
    return None if value is None else dec_in(value)


def opt_dec_out(text: str | None) -> Decimal | None:
    """``Decimal(text)``, passing ``None`` through."""
    return None if text is None else Decimal(text)


def _upsert_sql(table: str, columns: Sequence[str], key: str) -> str:
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {updates}"


def _range(since_ms: int | None, until_ms: int | None, column: str, bot: str | None = None) -> tuple[str, list]:
    """WHERE clause (possibly empty) for ``since <= column < until`` and an optional bot."""
    clauses, params = [], []
    if since_ms is not None:
        clauses.append(f"{column} >= ?")
        params.append(since_ms)
    if until_ms is not None:
        clauses.append(f"{column} < ?")
        params.append(until_ms)
    if bot is not None:
        clauses.append("bot = ?")
        params.append(bot)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class _Repository:
    """Base: holds the :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Bumped by every write of this repository: a reader may cache what it derived from the
        # table until the revision moves (one writer per database, SPEC L-4).
        self.revision = 0


class OrderRepository(_Repository):
    """Orders keyed by ``client_order_id`` (amount/filled in contracts, prices in quote)."""

    _COLUMNS = ("client_order_id", "bot", "symbol", "side", "type", "leg", "amount", "reduce_only",
                "created_ms", "status", "trigger_price", "filled", "average", "updated_ms", "reason", "price")
    _UPSERT = _upsert_sql("orders", _COLUMNS, "client_order_id")

    @staticmethod
    def _row(order: Order) -> tuple:
        return (
            order.client_order_id, order.bot, order.symbol, order.side.value, order.type.value,
            order.leg.value, dec_in(order.amount), int(order.reduce_only), order.created_ms,
            order.status.value, opt_dec_in(order.trigger_price), dec_in(order.filled),
            opt_dec_in(order.average), order.updated_ms, str(order.reason), opt_dec_in(order.price),
        )

    async def upsert(self, order: Order) -> None:
        """Insert ``order`` or replace the stored version with the same client order id."""
        self.revision += 1
        await self._db.execute(self._UPSERT, self._row(order))

    async def upsert_many(self, orders: Iterable[Order]) -> None:
        """:meth:`upsert` each of ``orders`` with one executemany (a flush's batch)."""
        self.revision += 1
        await self._db.executemany(self._UPSERT, [self._row(o) for o in orders])

    async def get(self, client_order_id: str) -> Order | None:
        """The order with this client order id, or ``None``."""
        row = await self._db.fetchone("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return None if row is None else self._order(row)

    async def list_open(self, bot: str | None = None, symbol: str | None = None) -> list[Order]:
        """Orders with status ``open``, optionally of one bot and/or symbol, oldest first (in the
        order they were first stored, i.e. placed: a restart restores the same order, SPEC L-3)."""
        sql, params = "SELECT * FROM orders WHERE status = ?", [OrderStatus.OPEN.value]
        if bot is not None:
            sql, params = sql + " AND bot = ?", params + [bot]
        if symbol is not None:
            sql, params = sql + " AND symbol = ?", params + [symbol]
        rows = await self._db.fetchall(sql + " ORDER BY created_ms, rowid", params)
        return [self._order(r) for r in rows]

    async def list_closed(self) -> list[Order]:
        """Every order that is no longer open (filled, canceled, rejected), oldest first."""
        rows = await self._db.fetchall(
            "SELECT * FROM orders WHERE status != ? ORDER BY created_ms, client_order_id", (OrderStatus.OPEN.value,)
        )
        return [self._order(r) for r in rows]

    async def filled_entry_ids(self) -> set[str]:
        """Client order ids of the entry orders that are no longer open and filled, in whole or
        in part (the S-7 demo record's trades)."""
        rows = await self._db.fetchall(
            "SELECT client_order_id, status, filled FROM orders WHERE leg = ? AND status != ?",
            (OrderLeg.ENTRY.value, OrderStatus.OPEN.value),
        )
        closed = OrderStatus.CLOSED.value
        return {cid for cid, status, filled in rows if status == closed or Decimal(filled) > 0}

    @staticmethod
    def _order(r: sqlite3.Row) -> Order:
        return Order(
            client_order_id=r["client_order_id"], bot=r["bot"], symbol=r["symbol"],
            side=OrderSide(r["side"]), type=OrderType(r["type"]), leg=OrderLeg(r["leg"]),
            amount=Decimal(r["amount"]), reduce_only=bool(r["reduce_only"]), created_ms=r["created_ms"],
            status=OrderStatus(r["status"]), trigger_price=opt_dec_out(r["trigger_price"]),
            filled=Decimal(r["filled"]), average=opt_dec_out(r["average"]), updated_ms=r["updated_ms"],
            reason=r["reason"], price=opt_dec_out(r["price"]),
        )


class FillRepository(_Repository):
    """Executions (append-only): amount in contracts, price and fee in quote."""

    _INSERT = ("INSERT INTO fills (client_order_id, bot, symbol, side, leg, amount, price, fee, timestamp)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

    @staticmethod
    def _row(fill: Fill) -> tuple:
        return (fill.client_order_id, fill.bot, fill.symbol, fill.side.value, fill.leg.value,
                dec_in(fill.amount), dec_in(fill.price), dec_in(fill.fee), fill.timestamp)

    async def add(self, fill: Fill) -> None:
        """Append one fill."""
        await self._db.execute(self._INSERT, self._row(fill))

    async def add_many(self, fills: Iterable[Fill]) -> None:
        """Append ``fills`` in order with one executemany (a flush's batch)."""
        await self._db.executemany(self._INSERT, [self._row(f) for f in fills])

    async def list(self, symbol: str | None = None, since_ms: int | None = None) -> list[Fill]:
        """Fills, optionally of one symbol and from ``since_ms`` (inclusive), oldest first."""
        where, params = _range(since_ms, None, "timestamp")
        if symbol is not None:
            where += (" AND" if where else " WHERE") + " symbol = ?"
            params.append(symbol)
        rows = await self._db.fetchall(f"SELECT * FROM fills{where} ORDER BY timestamp, id", params)
        return [
            Fill(client_order_id=r["client_order_id"], bot=r["bot"], symbol=r["symbol"],
                 side=OrderSide(r["side"]), leg=OrderLeg(r["leg"]), amount=Decimal(r["amount"]),
                 price=Decimal(r["price"]), fee=Decimal(r["fee"]), timestamp=r["timestamp"])
            for r in rows
        ]


class PositionRepository(_Repository):
    """Open and closed positions in one table (closed = ``closed_ms`` set), keyed by position_id."""

    _COLUMNS = ("position_id", "bot", "symbol", "side", "contracts", "initial_contracts",
                "entry_price", "opened_ms", "stop_loss", "take_profit_1", "take_profit_2", "leverage",
                "tp1_done", "realised_pnl", "fees", "funding", "closed_ms", "exit_price", "exit_reason",
                "take_profit_3", "steps_done", "additions", "last_addition_ms")
    _UPSERT = _upsert_sql("positions", _COLUMNS, "position_id")

    @staticmethod
    def _row(p: Position) -> tuple:
        return (
            p.position_id, p.bot, p.symbol, p.side.value, dec_in(p.contracts),
            dec_in(p.initial_contracts), dec_in(p.entry_price), p.opened_ms, dec_in(p.stop_loss),
            dec_in(p.take_profit_1), dec_in(p.take_profit_2), p.leverage, int(p.tp1_done),
            dec_in(p.realised_pnl), dec_in(p.fees), dec_in(p.funding), p.closed_ms,
            opt_dec_in(p.exit_price), None if p.exit_reason is None else p.exit_reason.value,
            opt_dec_in(p.take_profit_3), p.steps_done, p.additions, p.last_addition_ms,
        )

    async def upsert(self, position: Position) -> None:
        """Insert ``position`` or replace the stored version with the same position id."""
        self.revision += 1
        await self._db.execute(self._UPSERT, self._row(position))

    async def upsert_many(self, positions: Iterable[Position]) -> None:
        """:meth:`upsert` each of ``positions`` with one executemany (a flush's batch)."""
        self.revision += 1
        await self._db.executemany(self._UPSERT, [self._row(p) for p in positions])

    async def get(self, position_id: str) -> Position | None:
        """The position with this id (open or closed), or ``None``."""
        row = await self._db.fetchone("SELECT * FROM positions WHERE position_id = ?", (position_id,))
        return None if row is None else self._position(row)

    async def list_open(self, bot: str | None = None) -> list[Position]:
        """Open positions (``closed_ms`` NULL), optionally of one bot, by opened_ms."""
        sql, params = "SELECT * FROM positions WHERE closed_ms IS NULL", []
        if bot is not None:
            sql, params = sql + " AND bot = ?", [bot]
        rows = await self._db.fetchall(sql + " ORDER BY opened_ms, position_id", params)
        return [self._position(r) for r in rows]

    async def list_closed(
        self, since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None
    ) -> list[Position]:
        """Closed positions with ``since_ms <= closed_ms < until_ms`` (either bound optional),
        optionally of one bot, ordered by closed_ms then position_id."""
        where, params = _range(since_ms, until_ms, "closed_ms", bot)
        where += (" AND" if where else " WHERE") + " closed_ms IS NOT NULL"
        rows = await self._db.fetchall(f"SELECT * FROM positions{where} ORDER BY closed_ms, position_id", params)
        return [self._position(r) for r in rows]

    async def closed_results(self) -> list[TradeResult]:
        """Every closed position's identity and net PnL (quote), ordered as :meth:`list_closed`;
        a tenth of the cost of loading the positions (a /summary with 10,000 trades)."""
        rows = await self._db.fetchall(
            "SELECT position_id, bot, symbol, side, realised_pnl, fees, funding FROM positions"
            " WHERE closed_ms IS NOT NULL ORDER BY closed_ms, position_id"
        )
        sides = _SIDES
        return [TradeResult(pid, bot, symbol, sides[side], Decimal(realised) - Decimal(fees) + Decimal(funding))
                for pid, bot, symbol, side, realised, fees, funding in rows]

    async def count_closed(self, bot: str | None = None) -> int:
        """How many positions are closed (all bots, or one)."""
        where, params = _range(None, None, "closed_ms", bot)
        where += (" AND" if where else " WHERE") + " closed_ms IS NOT NULL"
        row = await self._db.fetchone(f"SELECT COUNT(*) FROM positions{where}", params)
        return int(row[0])

    @staticmethod
    def _position(r: sqlite3.Row) -> Position:
        return Position(
            position_id=r["position_id"], bot=r["bot"], symbol=r["symbol"], side=Side(r["side"]),
            contracts=Decimal(r["contracts"]), initial_contracts=Decimal(r["initial_contracts"]),
            entry_price=Decimal(r["entry_price"]), opened_ms=r["opened_ms"],
            stop_loss=Decimal(r["stop_loss"]), take_profit_1=Decimal(r["take_profit_1"]),
            take_profit_2=Decimal(r["take_profit_2"]), leverage=r["leverage"],
            tp1_done=bool(r["tp1_done"]), realised_pnl=Decimal(r["realised_pnl"]),
            fees=Decimal(r["fees"]), funding=Decimal(r["funding"]), closed_ms=r["closed_ms"],
            exit_price=opt_dec_out(r["exit_price"]),
            exit_reason=None if r["exit_reason"] is None else ExitReason(r["exit_reason"]),
            take_profit_3=opt_dec_out(r["take_profit_3"]), steps_done=r["steps_done"],
            additions=r["additions"], last_addition_ms=r["last_addition_ms"],
        )


class EquityRepository(_Repository):
    """Balance/equity samples in quote (append-only), ordered by timestamp then insertion."""

    async def add_many(self, snapshots: Sequence[EquitySnapshot]) -> None:
        """Append ``snapshots`` with one executemany."""
        await self._db.executemany(
            "INSERT INTO equity_snapshots (timestamp, balance, equity) VALUES (?, ?, ?)",
            [(s.timestamp, dec_in(s.balance), dec_in(s.equity)) for s in snapshots],
        )

    async def list(self, since_ms: int | None = None, until_ms: int | None = None) -> list[EquitySnapshot]:
        """Snapshots with ``since_ms <= timestamp < until_ms`` (either bound optional), oldest first."""
        where, params = _range(since_ms, until_ms, "timestamp")
        rows = await self._db.fetchall(
            f"SELECT timestamp, balance, equity FROM equity_snapshots{where} ORDER BY timestamp, id", params
        )
        return [EquitySnapshot(t, Decimal(b), Decimal(e)) for t, b, e in rows]

    async def latest(self) -> EquitySnapshot | None:
        """The newest snapshot, or ``None`` when there is none."""
        row = await self._db.fetchone(
            "SELECT timestamp, balance, equity FROM equity_snapshots ORDER BY timestamp DESC, id DESC LIMIT 1"
        )
        return None if row is None else EquitySnapshot(row[0], Decimal(row[1]), Decimal(row[2]))


class SignalRepository(_Repository):
    """Evaluated entry signals (SPEC S-13), append-only, and the aggregates behind the analytics
    commands (T-2). Aggregates group in SQL; each takes ``since_ms`` (inclusive) / ``until_ms``
    (exclusive), epoch ms UTC, and an optional ``bot``. ``components`` are stored comma-joined."""

    _COLUMNS = "timestamp, bot, symbol, side, score, passed, blocked_by, min_score, components"

    async def add_many(self, evaluations: Sequence[SignalEvaluation]) -> None:
        """Append ``evaluations`` with one executemany.

        Raises:
            ValueError: a component name contains a comma (it could not be read back).
        """
        rows = []
        for e in evaluations:
            if any("," in c for c in e.components):
                raise ValueError(f"signal component names cannot contain ',': {e.components!r}")
            # str(): a ReasonCode is a str subclass, which sqlite3 binds only after a slow
            # adapter search per row; its plain text is what the column holds.
            rows.append((e.timestamp, e.bot, e.symbol, e.side.value, float(e.score), int(e.passed),
                         str(e.blocked_by), float(e.min_score), ",".join(e.components)))
        await self._db.executemany(
            f"INSERT INTO signals ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )

    async def list(
        self, since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None
    ) -> list[SignalEvaluation]:
        """Evaluations with ``since_ms <= timestamp < until_ms``, optionally of one bot, oldest first."""
        where, params = _range(since_ms, until_ms, "timestamp", bot)
        rows = await self._db.fetchall(f"SELECT {self._COLUMNS} FROM signals{where} ORDER BY timestamp, id", params)
        return [self._evaluation(r) for r in rows]

    async def count(self, since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None) -> int:
        """How many evaluations are stored (in the range / of the bot, if given)."""
        where, params = _range(since_ms, until_ms, "timestamp", bot)
        row = await self._db.fetchone(f"SELECT COUNT(*) FROM signals{where}", params)
        return int(row[0])

    async def stats_by_symbol(
        self, *, since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None
    ) -> list[SymbolSignalStats]:
        """Per symbol: evaluated, passed, average and max score; most evaluated first."""
        where, params = _range(since_ms, until_ms, "timestamp", bot)
        rows = await self._db.fetchall(
            "SELECT symbol, COUNT(*) AS n, SUM(passed), AVG(score), MAX(score)"
            f" FROM signals{where} GROUP BY symbol ORDER BY n DESC, symbol", params
        )
        return [SymbolSignalStats(s, n, int(p), float(avg), float(top)) for s, n, p, avg, top in rows]

    async def blocker_counts(
        self, *, since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None
    ) -> list[BlockerCount]:
        """Per first-blocker reason code (passed signals excluded): count, share in % of all
        blocked signals, distinct symbols; most frequent first."""
        where, params = _blocked(since_ms, until_ms, bot)
        rows = await self._db.fetchall(
            "SELECT blocked_by, COUNT(*) AS n, COUNT(DISTINCT symbol), SUM(COUNT(*)) OVER ()"
            f" FROM signals{where} GROUP BY blocked_by ORDER BY n DESC, blocked_by", params
        )
        return [BlockerCount(reason, n, percent(n, total), symbols) for reason, n, symbols, total in rows]

    async def blocker_counts_by_symbol(
        self, *, since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None
    ) -> list[SymbolBlockerCount]:
        """Blocked signals per (symbol, reason code); by symbol, then most frequent code first."""
        where, params = _blocked(since_ms, until_ms, bot)
        rows = await self._db.fetchall(
            "SELECT symbol, blocked_by, COUNT(*) AS n"
            f" FROM signals{where} GROUP BY symbol, blocked_by ORDER BY symbol, n DESC, blocked_by", params
        )
        return [SymbolBlockerCount(symbol, reason, n) for symbol, reason, n in rows]

    async def near_misses(
        self, limit: int, margin: float = 0.5, *,
        since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None,
    ) -> list[SignalEvaluation]:
        """Blocked signals that almost passed, newest first, at most ``limit``: blocked by a check
        after the score (they met it), or under the minimum by at most ``margin`` score points."""
        where, params = _blocked(since_ms, until_ms, bot)
        # min_score > 0: rows from before migration 2 have no threshold, so "almost" is unknown.
        rows = await self._db.fetchall(
            f"SELECT {self._COLUMNS} FROM signals{where} AND (blocked_by != ?"
            " OR (min_score > 0 AND score >= min_score - ?)) ORDER BY timestamp DESC, id DESC LIMIT ?",
            [*params, SCORE_BELOW_MIN, margin, limit],
        )
        return [self._evaluation(r) for r in rows]

    async def top_missed(
        self, limit: int, *, since_ms: int | None = None, until_ms: int | None = None, bot: str | None = None
    ) -> list[MissedSymbol]:
        """Symbols ranked by blocked signals that met their min score (score ≥ min_score and a
        blocker other than the score), each with its most frequent blocker; at most ``limit``."""
        where, params = _blocked(since_ms, until_ms, bot)
        rows = await self._db.fetchall(
            "WITH missed AS (SELECT symbol, blocked_by, COUNT(*) AS n"
            f"   FROM signals{where} AND score >= min_score AND blocked_by != ? GROUP BY symbol, blocked_by),"
            " ranked AS (SELECT symbol, blocked_by, n, SUM(n) OVER (PARTITION BY symbol) AS total,"
            "   ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY n DESC, blocked_by) AS rank FROM missed)"
            " SELECT symbol, total, blocked_by, n FROM ranked WHERE rank = 1"
            " ORDER BY total DESC, symbol LIMIT ?",
            [*params, SCORE_BELOW_MIN, limit],
        )
        return [MissedSymbol(symbol, total, reason, n) for symbol, total, reason, n in rows]

    @staticmethod
    def _evaluation(r: sqlite3.Row) -> SignalEvaluation:
        t, b, s, side, score, passed, blocked, min_score, components = r
        return SignalEvaluation(t, b, s, Side(side), score, bool(passed), blocked, min_score,
                                tuple(components.split(",")) if components else ())


def _blocked(since_ms: int | None, until_ms: int | None, bot: str | None) -> tuple[str, list]:
    """WHERE clause of the blocked signals in the range (never empty, so callers can add AND)."""
    where, params = _range(since_ms, until_ms, "timestamp", bot)
    return (f"{where} AND passed = 0" if where else " WHERE passed = 0"), params


class RiskStateRepository(_Repository):
    """One :class:`RiskState` per bot (SPEC R-2, R-3), kept across restarts."""

    _COLUMNS = ("bot", "day", "day_start_equity", "sl_streak", "realised_today", "trades_today", "halted_reason",
                "gross_profit_today", "gross_loss_today")
    _UPSERT = _upsert_sql("risk_state", _COLUMNS, "bot")

    async def get(self, bot: str) -> RiskState | None:
        """The bot's risk state, or ``None`` if never saved."""
        r = await self._db.fetchone("SELECT * FROM risk_state WHERE bot = ?", (bot,))
        if r is None:
            return None
        return RiskState(
            bot=r["bot"], day=r["day"], day_start_equity=Decimal(r["day_start_equity"]),
            sl_streak=r["sl_streak"], realised_today=Decimal(r["realised_today"]),
            trades_today=r["trades_today"], halted_reason=r["halted_reason"],
            gross_profit_today=Decimal(r["gross_profit_today"]), gross_loss_today=Decimal(r["gross_loss_today"]),
        )

    async def save(self, state: RiskState) -> None:
        """Insert or replace the state of ``state.bot``."""
        await self._db.execute(self._UPSERT, (
            state.bot, state.day, dec_in(state.day_start_equity), state.sl_streak,
            dec_in(state.realised_today), state.trades_today, str(state.halted_reason),
            dec_in(state.gross_profit_today), dec_in(state.gross_loss_today),
        ))


class BlacklistRepository(_Repository):
    """Stop-loss counts and blocks per bot and symbol (SPEC R-6), kept across restarts."""

    async def save(self, entry: SymbolBlacklist) -> None:
        """Insert or replace the entry of (bot, symbol)."""
        await self._db.execute(
            "INSERT INTO symbol_blacklist (bot, symbol, stop_losses, blocked_until_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (bot, symbol) DO UPDATE SET stop_losses = excluded.stop_losses,"
            " blocked_until_ms = excluded.blocked_until_ms",
            (entry.bot, entry.symbol, entry.stop_losses, entry.blocked_until_ms),
        )

    async def list(self, bot: str | None = None) -> list[SymbolBlacklist]:
        """Every entry (optionally of one bot), by bot then symbol."""
        sql, params = "SELECT * FROM symbol_blacklist", []
        if bot is not None:
            sql, params = sql + " WHERE bot = ?", [bot]
        rows = await self._db.fetchall(sql + " ORDER BY bot, symbol", params)
        return [SymbolBlacklist(r["bot"], r["symbol"], r["stop_losses"], r["blocked_until_ms"]) for r in rows]


class PauseRepository(_Repository):
    """Manually paused symbols per bot (SPEC R-7), persisted."""

    async def pause(self, bot: str, symbol: str, paused_ms: int) -> None:
        """Pause ``symbol`` for ``bot`` since ``paused_ms`` (epoch ms UTC). Pausing an already
        paused symbol keeps the original pause time."""
        await self._db.execute(
            "INSERT INTO paused_symbols (bot, symbol, paused_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (bot, symbol) DO NOTHING",
            (bot, symbol, paused_ms),
        )

    async def resume(self, bot: str, symbol: str) -> None:
        """Un-pause ``symbol`` for ``bot`` (no-op if it was not paused)."""
        await self._db.execute("DELETE FROM paused_symbols WHERE bot = ? AND symbol = ?", (bot, symbol))

    async def list(self, bot: str) -> set[str]:
        """Symbols currently paused for ``bot``."""
        rows = await self._db.fetchall("SELECT symbol FROM paused_symbols WHERE bot = ?", (bot,))
        return {r[0] for r in rows}


class AccountRepository(_Repository):
    """The single account row: balance and peak equity in quote."""

    async def get(self) -> Account | None:
        """The account, or ``None`` before the first save."""
        r = await self._db.fetchone("SELECT balance, peak_equity, updated_ms FROM account WHERE id = 1")
        return None if r is None else Account(Decimal(r[0]), Decimal(r[1]), r[2])

    async def save(self, account: Account) -> None:
        """Insert or replace the account row."""
        await self._db.execute(
            "INSERT INTO account (id, balance, peak_equity, updated_ms) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET balance = excluded.balance,"
            " peak_equity = excluded.peak_equity, updated_ms = excluded.updated_ms",
            (dec_in(account.balance), dec_in(account.peak_equity), account.updated_ms),
        )


class RuntimeRepository(_Repository):
    """Small key/value store for runtime markers (e.g. the replay cursor)."""

    async def get(self, key: str) -> str | None:
        """The value stored under ``key``, or ``None``."""
        row = await self._db.fetchone("SELECT value FROM runtime WHERE key = ?", (key,))
        return None if row is None else row[0]

    async def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing any previous value). Raises TypeError if
        ``value`` is not a str."""
        if not isinstance(value, str):
            raise TypeError(f"runtime value must be str, got {type(value).__name__}")
        await self._db.execute(
            "INSERT INTO runtime (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


class AuditMismatch(OptiFlowError):
    """The file's audit trail and its state disagree at start (SPEC A-1): a cut tail, a
    rewritten head marker, or a balance / open position edited without the audit. One line fit
    for the trader; the bot refuses to trade on it."""


AUDIT_HEAD_KEY = "audit_head"  # runtime key: "seq:hash" of the last record written (tail-cut check)


class AuditRepository(_Repository):
    """The append-only audit log (SPEC A-1). :meth:`append` chains new entries after the
    stored head inside the caller's transaction, so a rolled-back transaction leaves no record
    and the chain never forks; the head marker is written in the same transaction."""

    _COLUMNS = "seq, ts, action, bot, symbol, side, size, why, config_id, prev_hash, hash"

    async def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record, or (0, GENESIS) for an empty log."""
        row = await self._db.fetchone("SELECT seq, hash FROM audit ORDER BY id DESC LIMIT 1")
        return (0, GENESIS) if row is None else (row[0], row[1])

    async def append(self, entries: Sequence[AuditEntry], config_id: str) -> list[AuditRecord]:
        """Chain and insert ``entries`` (in the caller's transaction, or one of their own);
        returns the stored records. A BALANCE entry equal to the last stored one is dropped
        (a restart re-reads the same balance; the ledger only records changes)."""
        if not entries:
            return []
        async with self._db._joined():
            if any(e.action == BALANCE for e in entries):
                last = await self._last_why(BALANCE)
                entries = [e for e in entries if e.action != BALANCE or e.why != last]
                if not entries:
                    return []
            seq, prev = await self.head()
            records = chain(entries, head_seq=seq, head_hash=prev, config_id=config_id)
            await self._db.executemany(
                f"INSERT INTO audit ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.seq, r.ts, r.action, r.bot, r.symbol, r.side, r.size, r.why_json, r.config_id,
                  r.prev_hash, r.hash) for r in records],
            )
            last = records[-1]
            await self._db.execute(
                "INSERT INTO runtime (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (AUDIT_HEAD_KEY, f"{last.seq}:{last.hash}"),
            )
        return records

    async def _last_why(self, action: str, position_id: str | None = None) -> tuple[int, dict] | None:
        """(seq, rationale) of the newest record of ``action`` (of one position), or None."""
        if position_id is None:
            row = await self._db.fetchone("SELECT seq, why FROM audit WHERE action = ? ORDER BY id DESC LIMIT 1",
                                          (action,))
        else:
            row = await self._db.fetchone(
                "SELECT seq, why FROM audit WHERE action = ? AND json_extract(why, '$.position_id') = ?"
                " ORDER BY id DESC LIMIT 1", (action, position_id))
        return None if row is None else (row[0], json.loads(row[1]))

    async def marker(self) -> tuple[int, str] | None:
        """The head marker (seq, hash) written with the last append, or None."""
        row = await self._db.fetchone("SELECT value FROM runtime WHERE key = ?", (AUDIT_HEAD_KEY,))
        if row is None:
            return None
        seq_text, _, digest = row[0].partition(":")
        return (int(seq_text), digest) if seq_text.isdigit() else (-1, digest)

    async def check_at_start(self) -> None:
        """The cheap half of ``audit verify`` a start runs before trusting the file (SPEC A-1,
        L-3): the head marker names the last record (a tail cut and restarted over would
        re-use its seqs), and the account and every open position equal their last BALANCE /
        POSITION records (a balance or a position edited without the audit).

        Raises:
            AuditMismatch: naming what disagrees; the bot must not trade on such a file.
        """
        seq, digest = await self.head()
        marker = await self.marker()
        if seq and marker is None:
            raise AuditMismatch("the audit head marker is missing (deleted)")
        if marker is not None and marker != (seq, digest):
            if marker[0] > seq:
                raise AuditMismatch(f"audit records after seq {seq} are missing (the head marker says seq {marker[0]}): "
                                    "the tail was deleted")
            raise AuditMismatch(f"the audit head marker says {marker[0]}:{marker[1][:12]}… but the last record is "
                                f"{seq}:{digest[:12]}…: the marker or the tail was rewritten")
        balance = await self._last_why(BALANCE)
        if balance is not None:
            row = await self._db.fetchone("SELECT balance, peak_equity FROM account WHERE id = 1")
            state = None if row is None else {"balance": row[0], "peak_equity": row[1]}
            if state != balance[1]:
                raise AuditMismatch(f"the account ({state}) differs from its audit record seq {balance[0]} "
                                    f"({balance[1]}): edited without the audit")
        rows = await self._db.fetchall("SELECT * FROM positions WHERE closed_ms IS NULL")
        for row in rows:
            position = PositionRepository._position(row)
            audited = await self._last_why(POSITION, position.position_id)
            if audited is None:
                if balance is not None:  # the ledger records exist: an open position must have one
                    raise AuditMismatch(f"open position {position.position_id} is in no audit record: "
                                        "inserted without the audit")
                continue
            state = position_state(position)
            wrong = [name for name, value in audited[1].items() if state.get(name) != value]
            if wrong:
                raise AuditMismatch(f"open position {position.position_id}: {wrong[0]} is {state.get(wrong[0])}, "
                                    f"its audit record seq {audited[0]} says {audited[1][wrong[0]]}: edited without "
                                    "the audit")

    async def list(self, since_ms: int | None = None, until_ms: int | None = None) -> list[AuditRecord]:
        """Records with ``since_ms <= ts < until_ms`` (either bound optional), in storage order."""
        where, params = _range(since_ms, until_ms, "ts")
        rows = await self._db.fetchall(f"SELECT {self._COLUMNS} FROM audit{where} ORDER BY id", params)
        return [AuditRecord(*r) for r in rows]

    async def last(self, limit: int) -> list[AuditRecord]:
        """The newest ``limit`` records, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {self._COLUMNS} FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [AuditRecord(*r) for r in reversed(rows)]

    async def count(self) -> int:
        """How many records are stored."""
        row = await self._db.fetchone("SELECT COUNT(*) FROM audit")
        return int(row[0])

    async def verify(self, anchors: Sequence[tuple[int, str]] = ()) -> Verification:
        """Verify the whole chain, the head marker, the outside ``anchors`` ((seq, hash or a
        prefix of ≥ 16 hex digits) from a build card, shutdown message or daily report), the
        config snapshots the records cite, and replay the ledger against the state tables
        (see :func:`trading.domain.audit.verify` and :func:`~trading.domain.audit.check_ledger`)."""
        records = await self.list()
        result = verify(records, await self.marker(), anchors, marker_required=True)
        if not result.ok:
            return result
        # Each cited config snapshot exists and still hashes to its id (an edited risk limit
        # would otherwise rewrite the rationale of every record that cites it).
        rows = await self._db.fetchall("SELECT id, body FROM config_snapshots")
        intact = {snapshot_id: sha256_hex(body) == snapshot_id for snapshot_id, body in rows}
        for record in records:
            state = intact.get(record.config_id)
            if state is not True:
                what = "is missing" if state is None else "was edited"
                return Verification(False, result.count, result.head_hash, record.seq,
                                    f"record seq {record.seq}: config snapshot {record.config_id[:12]}… {what}",
                                    head_seq=result.head_seq)
        orders = [OrderRepository._order(r) for r in await self._db.fetchall("SELECT * FROM orders")]
        fills = await FillRepository(self._db).list()
        positions = [PositionRepository._position(r) for r in await self._db.fetchall("SELECT * FROM positions")]
        account = await AccountRepository(self._db).get()
        problem = check_ledger(records, orders=orders, fills=fills, positions=positions, account=account)
        if problem is not None:
            return Verification(False, result.count, result.head_hash, problem.seq, problem.problem, "ledger",
                                result.head_seq)
        return result

    async def exit_reasons(self, client_order_ids: Sequence[str]) -> dict[str, str]:
        """The EXIT reason recorded for each of these close orders (client order id → reason
        value), for restoring close orders in flight after a restart (SPEC L-3)."""
        if not client_order_ids:
            return {}
        marks = ", ".join("?" * len(client_order_ids))
        rows = await self._db.fetchall(
            "SELECT json_extract(why, '$.client_order_id'), json_extract(why, '$.reason') FROM audit"
            f" WHERE action = 'EXIT' AND json_extract(why, '$.client_order_id') IN ({marks})",
            list(client_order_ids),
        )
        return {cid: reason for cid, reason in rows}


    async def entry_details(self, client_order_ids: Sequence[str]) -> dict[str, tuple[Decimal, Decimal | None, int]]:
        """For unfilled entry orders: client order id → (TP1 share %, ATR or None, leverage) from
        their RISK_ALLOWED records, so a restart resumes them as decided (SPEC L-3)."""
        if not client_order_ids:
            return {}
        marks = ", ".join("?" * len(client_order_ids))
        rows = await self._db.fetchall(
            "SELECT json_extract(why, '$.client_order_id'), json_extract(why, '$.tp1_share_pct'),"
            " json_extract(why, '$.atr'), json_extract(why, '$.leverage') FROM audit WHERE action = 'RISK_ALLOWED'"
            f" AND json_extract(why, '$.client_order_id') IN ({marks}) AND json_extract(why, '$.leverage') IS NOT NULL",
            list(client_order_ids),
        )
        return {cid: (Decimal(share), opt_dec_out(atr), int(leverage)) for cid, share, atr, leverage in rows}


class ConfigSnapshotRepository(_Repository):
    """Trading config snapshots referenced by audit records (SPEC A-1), stored once by id."""

    async def save(self, snapshot_id: str, body_json: str, created_ms: int) -> None:
        """Store the snapshot unless this id is already stored."""
        await self._db.execute(
            "INSERT INTO config_snapshots (id, created_ms, body) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (snapshot_id, created_ms, body_json),
        )

    async def get(self, snapshot_id: str) -> str | None:
        """The canonical JSON of a snapshot, or None."""
        row = await self._db.fetchone("SELECT body FROM config_snapshots WHERE id = ?", (snapshot_id,))
        return None if row is None else row[0]


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A dangerous chat action waiting for its inline confirm (SPEC T-1, T-3).

    Attributes: id (the only thing the callback data carries), user_id (Telegram user who asked),
    action (UPPER_SNAKE code, e.g. ``CLOSE_POSITION``), argument (e.g. ``bot|symbol``),
    created_ms / expires_ms / used_ms (epoch ms UTC, wall clock; used_ms None until used).
    """

    id: int
    user_id: int
    action: str
    argument: str
    created_ms: int
    expires_ms: int
    used_ms: int | None


class ConfirmationRepository(_Repository):
    """Pending confirmations of dangerous actions (SPEC T-3: callback data ≤ 64 bytes)."""

    async def create(self, user_id: int, action: str, argument: str, now_ms: int, ttl_ms: int) -> Confirmation:
        """Store a new confirmation valid for ``ttl_ms`` from ``now_ms`` and return it; rows
        expired for more than a day are dropped on the way (the table stays small)."""
        async with self._db.transaction():  # the insert and its rowid read, with nothing between
            await self._db.execute("DELETE FROM confirmations WHERE expires_ms < ?", (now_ms - 86_400_000,))
            await self._db.execute(
                "INSERT INTO confirmations (user_id, action, argument, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
                (user_id, action, argument, now_ms, now_ms + ttl_ms),
            )
            row = await self._db.fetchone("SELECT last_insert_rowid()")
        assert row is not None
        return Confirmation(int(row[0]), user_id, action, argument, now_ms, now_ms + ttl_ms, None)

    async def get(self, confirmation_id: int) -> Confirmation | None:
        """The confirmation with this id, or None."""
        r = await self._db.fetchone(
            "SELECT id, user_id, action, argument, created_ms, expires_ms, used_ms FROM confirmations WHERE id = ?",
            (confirmation_id,),
        )
        return None if r is None else Confirmation(r[0], r[1], r[2], r[3], r[4], r[5], r[6])

    async def use(self, confirmation_id: int, now_ms: int) -> bool:
        """Mark it used; True only for the one caller that found it unused (a double tap runs
        the action once)."""
        changed = await self._db.execute(
            "UPDATE confirmations SET used_ms = ? WHERE id = ? AND used_ms IS NULL", (now_ms, confirmation_id)
        )
        return changed == 1

    async def count(self) -> int:
        """How many confirmations were ever stored."""
        row = await self._db.fetchone("SELECT COUNT(*) FROM confirmations")
        return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """A monitor incident as stored (SPEC M-1): open while ``closed_ms`` is None."""

    key: str
    kind: str
    playbook: str
    text: str
    opened_ms: int
    closed_ms: int | None


class IncidentRepository(_Repository):
    """Monitor incidents (SPEC M-1), so an alert is sent once per incident, across restarts."""

    async def list_open(self) -> dict[str, IncidentRow]:
        """Open incidents by key."""
        rows = await self._db.fetchall(
            "SELECT key, kind, playbook, text, opened_ms, closed_ms FROM incidents WHERE closed_ms IS NULL"
        )
        return {r[0]: IncidentRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows}

    async def open(self, key: str, kind: str, playbook: str, text: str, now_ms: int) -> None:
        """Open (or re-open after it closed) the incident ``key``."""
        await self._db.execute(
            "INSERT INTO incidents (key, kind, playbook, text, opened_ms, closed_ms) VALUES (?, ?, ?, ?, ?, NULL)"
            " ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, playbook = excluded.playbook,"
            " text = excluded.text, opened_ms = excluded.opened_ms, closed_ms = NULL",
            (key, kind, playbook, text, now_ms),
        )

    async def close(self, key: str, now_ms: int) -> None:
        """Close the incident ``key`` (its condition cleared)."""
        await self._db.execute("UPDATE incidents SET closed_ms = ? WHERE key = ? AND closed_ms IS NULL", (now_ms, key))


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A critical notification waiting for Telegram (SPEC T-4): ``body`` is Telegram HTML of at
    most 4096 characters; ``silent`` sends it without sound; ``markup`` is the inline keyboard
    as JSON ("" = none); ``created_ms`` epoch ms UTC."""

    id: int
    chat_id: int
    category: str
    body: str
    silent: bool
    created_ms: int
    markup: str = ""


class OutboxRepository(_Repository):
    """The notification outbox: critical messages are stored before sending, deleted once sent,
    and re-sent in insertion order after a restart (SPEC T-4)."""

    async def add(self, chat_id: int, category: str, body: str, silent: bool, created_ms: int,
                  markup: str = "") -> int:
        """Store one message; returns its id (ids grow in insertion order)."""
        async with self._db.transaction():
            await self._db.execute(
                "INSERT INTO notification_outbox (chat_id, category, body, silent, markup, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (chat_id, category, body, int(silent), markup or None, created_ms),
            )
            row = await self._db.fetchone("SELECT last_insert_rowid()")
        assert row is not None
        return int(row[0])

    async def pending(self) -> list[OutboxMessage]:
        """Every message not yet accepted by Telegram, oldest first."""
        rows = await self._db.fetchall(
            "SELECT id, chat_id, category, body, silent, created_ms, markup FROM notification_outbox ORDER BY id"
        )
        return [OutboxMessage(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6] or "") for r in rows]

    async def delete(self, message_id: int) -> None:
        """Forget a message Telegram accepted (or one that can never be delivered)."""
        await self._db.execute("DELETE FROM notification_outbox WHERE id = ?", (message_id,))
