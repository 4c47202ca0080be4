"""storage/: exact round-trips, restart resumes (SPEC L-3), migrations, transactions, pauses (R-7)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from decimal import Decimal

import pytest

from storage import SCHEMA_VERSION, Database, Storage, StorageError
from storage.migrations import MIGRATIONS
from trading.domain.errors import OptiFlowError
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
)

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


def make_order(cid: str = "paper-a-btc-entry-1", **kw) -> Order:
    base = dict(client_order_id=cid, bot="alpha", symbol=BTC, side=OrderSide.BUY, type=OrderType.MARKET,
                leg=OrderLeg.ENTRY, amount=Decimal("0.00012345"), reduce_only=False, created_ms=1_700_000_000_000)
    return Order(**{**base, **kw})


def make_position(pid: str = "p1", **kw) -> Position:
    base = dict(position_id=pid, bot="alpha", symbol=BTC, side=Side.LONG, contracts=Decimal("0.00012345"),
                initial_contracts=Decimal("0.0002469"), entry_price=Decimal("104321.1"), opened_ms=1_000,
                stop_loss=Decimal("103800.00"), take_profit_1=Decimal("104900.5"),
                take_profit_2=Decimal("105500"), leverage=10)
    return Position(**{**base, **kw})


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "optiflow.db"


@pytest.fixture
async def store(db_path):
    s = await Storage.open(db_path)
    yield s
    await s.close()


def raw(db_path, sql: str, params=()) -> list[tuple]:
    """Read through an independent sqlite3 connection: sees committed data only."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------- round-trips
async def test_order_round_trip_upsert_and_list_open(store):
    bare = make_order()
    bracket = make_order("paper-a-btc-sl-1", side=OrderSide.SELL, type=OrderType.STOP_MARKET, leg=OrderLeg.STOP_LOSS,
                         reduce_only=True, trigger_price=Decimal("103800.10"), created_ms=1_700_000_000_001)
    other = make_order("paper-b-eth-entry-1", bot="beta", symbol=ETH, amount=Decimal("1E+2"), created_ms=5)
    for order in (bare, bracket, other):
        await store.orders.upsert(order)

    got = await store.orders.get(bracket.client_order_id)
    assert got == bracket and got.trigger_price == Decimal("103800.10") and str(got.trigger_price) == "103800.10"
    assert str((await store.orders.get(other.client_order_id)).amount) == "1E+2"  # representation kept too
    assert await store.orders.get("missing") is None

    filled = replace(bare, status=OrderStatus.CLOSED, filled=Decimal("0.00012345"),
                     average=Decimal("104321.1"), updated_ms=1_700_000_000_500, reason="")
    await store.orders.upsert(filled)  # same client order id → replaced, not duplicated
    assert await store.orders.get(bare.client_order_id) == filled
    assert raw(store.db.path, "SELECT COUNT(*) FROM orders") == [(3,)]

    assert await store.orders.list_open() == [other, bracket]  # oldest first, filled one gone
    assert await store.orders.list_open(bot="alpha") == [bracket]
    assert await store.orders.list_open(symbol=ETH) == [other]
    assert await store.orders.list_open(bot="alpha", symbol=ETH) == []


async def test_decimals_are_stored_as_text_enums_as_values_bools_as_ints(store):
    await store.orders.upsert(make_order(reduce_only=True))
    row = raw(store.db.path, "SELECT typeof(amount), amount, side, type, leg, reduce_only, trigger_price FROM orders")
    assert row == [("text", "0.00012345", "buy", "MARKET", "entry", 1, None)]


async def test_fill_round_trip_filters_and_order(store):
    fills = [
        Fill("c1", "alpha", BTC, OrderSide.BUY, OrderLeg.ENTRY, Decimal("0.00012345"), Decimal("104321.1"),
             Decimal("0.006439"), 2_000),
        Fill("c2", "alpha", ETH, OrderSide.SELL, OrderLeg.TP1, Decimal("0.5"), Decimal("3850.27"),
             Decimal("0.9625675"), 1_000),
        Fill("c3", "alpha", BTC, OrderSide.SELL, OrderLeg.STOP_LOSS, Decimal("0.00012345"), Decimal("103800"),
             Decimal("-0.001"), 3_000),
    ]
    for fill in fills:
        await store.fills.add(fill)
    assert await store.fills.list() == [fills[1], fills[0], fills[2]]  # oldest first
    assert await store.fills.list(symbol=BTC) == [fills[0], fills[2]]
    assert await store.fills.list(since_ms=2_000) == [fills[0], fills[2]]  # inclusive
    assert await store.fills.list(symbol=ETH, since_ms=1_001) == []


async def test_position_round_trip_open_and_closed(store):
    open_pos = make_position("p-open", opened_ms=5_000)
    closed = make_position("p-closed", side=Side.SHORT, tp1_done=True, contracts=Decimal("0"),
                           realised_pnl=Decimal("-12.3456789"), fees=Decimal("0.0415"), funding=Decimal("-0.00001"),
                           closed_ms=9_000, exit_price=Decimal("104900.5"), exit_reason=ExitReason.TP2)
    await store.positions.upsert(open_pos)
    await store.positions.upsert(closed)
    assert await store.positions.get("p-open") == open_pos
    got = await store.positions.get("p-closed")
    assert got == closed and got.realised_pnl == Decimal("-12.3456789") and got.exit_reason is ExitReason.TP2
    assert await store.positions.get("nope") is None
    assert await store.positions.list_open() == [open_pos]
    assert await store.positions.list_closed() == [closed]
    assert await store.positions.count_closed() == 1

    # closing the open one is an upsert on the same id: it moves from open to closed
    await store.positions.upsert(replace(open_pos, closed_ms=9_500, exit_reason=ExitReason.STOP_LOSS,
                                         exit_price=Decimal("103800.00")))
    assert await store.positions.list_open() == []
    assert await store.positions.count_closed() == 2


async def test_list_closed_range_is_since_inclusive_until_exclusive(store):
    for pid, closed_ms, bot in [("b", 100, "alpha"), ("a", 100, "beta"), ("c", 200, "alpha"), ("d", 300, "alpha")]:
        await store.positions.upsert(make_position(pid, bot=bot, closed_ms=closed_ms, exit_reason=ExitReason.STOP_LOSS))
    await store.positions.upsert(make_position("open", bot="alpha"))
    ids = lambda ps: [p.position_id for p in ps]  # noqa: E731
    assert ids(await store.positions.list_closed()) == ["a", "b", "c", "d"]  # closed_ms, then id
    assert ids(await store.positions.list_closed(since_ms=100, until_ms=300)) == ["a", "b", "c"]
    assert ids(await store.positions.list_closed(since_ms=101)) == ["c", "d"]
    assert ids(await store.positions.list_closed(until_ms=200, bot="alpha")) == ["b"]
    assert ids(await store.positions.list_open(bot="alpha")) == ["open"]
    assert await store.positions.list_open(bot="beta") == []
    assert await store.positions.count_closed() == 4


async def test_equity_add_many_list_and_latest(store):
    assert await store.equity.latest() is None
    snaps = [EquitySnapshot(t, Decimal("1000.00"), Decimal("1000.00") + Decimal(t) / 1000)
             for t in range(0, 10_000, 1000)]
    await store.equity.add_many(snaps[5:] + snaps[:5])  # insertion order does not matter
    assert await store.equity.list() == snaps
    assert await store.equity.list(since_ms=2000, until_ms=4000) == snaps[2:4]
    assert await store.equity.latest() == snaps[-1]
    assert (await store.equity.latest()).equity == Decimal("1009")


async def test_signal_add_many_list_and_count(store):
    evals = [
        SignalEvaluation(1_000, "alpha", BTC, Side.LONG, 0.7321, True),
        SignalEvaluation(2_000, "beta", ETH, Side.SHORT, 0.41, False, "SCORE_BELOW_MIN"),
        SignalEvaluation(3_000, "alpha", ETH, Side.SHORT, 0.1 + 0.2, False, "DAILY_LOSS_LIMIT"),
    ]
    await store.signals.add_many(evals)
    assert await store.signals.count() == 3
    assert await store.signals.list() == evals  # float score round-trips bit-exactly
    assert await store.signals.list(bot="alpha") == [evals[0], evals[2]]
    assert await store.signals.list(since_ms=2_000, until_ms=3_000) == [evals[1]]


async def test_signal_min_score_and_components_round_trip_S13(store):
    """S-13 (migration 2): the score a signal needed and its satisfied conditions come back exactly."""
    evals = [
        SignalEvaluation(1_000, "alpha", BTC, Side.LONG, 3.4, True, "", 3.3, ("rsi", "volume")),
        SignalEvaluation(2_000, "alpha", ETH, Side.SHORT, 2.9, False, "SCORE_BELOW_MIN", 0.1 + 3.2, ()),
        SignalEvaluation(3_000, "alpha", ETH, Side.SHORT, 1.0, False, "SCORE_BELOW_MIN", float("inf"), ("macd",)),
    ]
    await store.signals.add_many(evals)
    assert await store.signals.list() == evals
    assert await store.signals.count(since_ms=2_000) == 2


async def test_migration_2_keeps_v1_signals_with_unknown_threshold(db_path):
    """A v1 database upgrades in place: old signals read back with min_score 0 and no components."""
    db = await Database.open(db_path, migrations=MIGRATIONS[:1])
    await db.execute(
        "INSERT INTO signals (timestamp, bot, symbol, side, score, passed, blocked_by)"
        " VALUES (5, 'alpha', ?, 'long', 2.5, 0, 'SCORE_BELOW_MIN')", (BTC,)
    )
    await db.close()
    store = await Storage.open(db_path)
    try:
        assert await store.db.user_version() == len(MIGRATIONS) >= 2
        assert await store.signals.list() == [
            SignalEvaluation(5, "alpha", BTC, Side.LONG, 2.5, False, "SCORE_BELOW_MIN", 0.0, ())
        ]
    finally:
        await store.close()
    indexes = {r[0] for r in raw(db_path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_signals_blocked_by_timestamp", "ix_signals_symbol_timestamp"} <= indexes


async def test_risk_account_runtime_round_trip(store):
    assert await store.risk.get("alpha") is None and await store.account.get() is None
    state = RiskState("alpha", "2024-05-01", Decimal("1000.00"), sl_streak=2, realised_today=Decimal("-20.0001"),
                      trades_today=7, halted_reason="SL_STREAK")
    await store.risk.save(state)
    await store.risk.save(replace(state, bot="beta", halted_reason=""))
    assert await store.risk.get("alpha") == state
    await store.risk.save(replace(state, sl_streak=0, halted_reason=""))
    assert (await store.risk.get("alpha")).sl_streak == 0

    account = Account(Decimal("1000.12345678"), Decimal("1012.5"), 1_700_000_000_000)
    await store.account.save(account)
    await store.account.save(replace(account, balance=Decimal("998.7")))
    assert await store.account.get() == replace(account, balance=Decimal("998.7"))
    assert raw(store.db.path, "SELECT COUNT(*) FROM account") == [(1,)]

    assert await store.runtime.get("replay_cursor_ms") is None
    await store.runtime.set("replay_cursor_ms", "1700000000000")
    await store.runtime.set("replay_cursor_ms", "1700000060000")
    assert await store.runtime.get("replay_cursor_ms") == "1700000060000"


async def test_float_money_is_refused(store):
    with pytest.raises(TypeError):
        await store.orders.upsert(make_order(amount=0.1))
    assert await store.orders.get("paper-a-btc-entry-1") is None


# ---------------------------------------------------------------- restart, pragmas, migrations
async def test_reopen_finds_the_state_again(db_path):
    """SPEC L-3: everything written before a restart is there after it."""
    store = await Storage.open(db_path)
    order, position = make_order(), make_position()
    account = Account(Decimal("1000"), Decimal("1000"), 1)
    state = RiskState("alpha", "2024-05-01", Decimal("1000"), 1)
    snap = EquitySnapshot(1, Decimal("1000"), Decimal("1000.5"))
    await store.orders.upsert(order)
    await store.positions.upsert(position)
    await store.account.save(account)
    await store.risk.save(state)
    await store.equity.add_many([snap])
    await store.runtime.set("k", "v")
    await store.close()

    store = await Storage.open(db_path)
    try:
        assert await store.orders.list_open() == [order]
        assert await store.positions.list_open() == [position]
        assert await store.account.get() == account
        assert await store.risk.get("alpha") == state
        assert await store.equity.latest() == snap
        assert await store.runtime.get("k") == "v"
    finally:
        await store.close()


async def test_pragmas_and_schema_version(store):
    db = store.db
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1
    assert (await db.fetchone("PRAGMA synchronous"))[0] == 1  # NORMAL
    assert (await db.fetchone("PRAGMA busy_timeout"))[0] == 5000
    assert await db.user_version() == SCHEMA_VERSION == len(MIGRATIONS) >= 1
    assert raw(db.path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_newer_database_is_refused(db_path):
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError) as info:
        await Storage.open(db_path)
    assert isinstance(info.value, OptiFlowError)
    assert str(SCHEMA_VERSION + 1) in str(info.value) and str(SCHEMA_VERSION) in str(info.value)
    assert raw(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'") == []  # nothing touched
    assert raw(db_path, "PRAGMA journal_mode") == [("delete",)]  # not even switched to WAL


async def test_opening_twice_does_not_rerun_migrations(db_path):
    steps = (*MIGRATIONS, "CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (1);")
    for _ in range(2):
        db = await Database.open(db_path, migrations=steps)
        assert await db.user_version() == len(steps)
        await db.close()
    assert raw(db_path, "SELECT COUNT(*) FROM counter") == [(1,)]
    # the default list is a prefix of `steps`: a database one step ahead is refused by the old code
    with pytest.raises(StorageError):
        await Database.open(db_path)


async def test_failing_migration_step_is_rolled_back_with_its_version(db_path):
    bad = (*MIGRATIONS, "CREATE TABLE half (x); INSERT INTO no_such_table VALUES (1);")
    with pytest.raises(StorageError):
        await Database.open(db_path, migrations=bad)
    assert raw(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]  # earlier steps kept
    assert raw(db_path, "SELECT name FROM sqlite_master WHERE name = 'half'") == []


# ---------------------------------------------------------------- transactions
async def test_a_transaction_that_raises_rolls_back_every_write(store):
    await store.runtime.set("before", "1")
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction():
            await store.orders.upsert(make_order())
            await store.positions.upsert(make_position())
            await store.equity.add_many([EquitySnapshot(1, Decimal("1"), Decimal("1"))])
            await store.pauses.pause("alpha", BTC, 1)
            await store.runtime.set("before", "2")
            assert await store.orders.get("paper-a-btc-entry-1") is not None  # visible inside
            raise RuntimeError("boom")
    assert await store.orders.get("paper-a-btc-entry-1") is None
    assert await store.positions.list_open() == []
    assert await store.equity.latest() is None
    assert await store.pauses.list("alpha") == set()
    assert await store.runtime.get("before") == "1"
    # the database is usable afterwards
    async with store.transaction():
        await store.runtime.set("after", "ok")
    assert raw(store.db.path, "SELECT value FROM runtime WHERE key = 'after'") == [("ok",)]


async def test_writes_commit_at_block_end_and_standalone_writes_commit_at_once(store):
    path = store.db.path
    await store.runtime.set("solo", "x")
    assert raw(path, "SELECT value FROM runtime") == [("x",)]  # own short transaction, committed
    async with store.transaction():
        await store.orders.upsert(make_order())
        assert raw(path, "SELECT COUNT(*) FROM orders") == [(0,)]  # not yet committed
    assert raw(path, "SELECT COUNT(*) FROM orders") == [(1,)]


async def test_nested_transaction_does_not_deadlock_and_inner_failure_is_contained(store):
    async def body():
        async with store.transaction():
            await store.runtime.set("outer", "1")
            with pytest.raises(ValueError):
                async with store.transaction():
                    await store.runtime.set("inner", "1")
                    raise ValueError
            async with store.transaction():
                await store.runtime.set("inner2", "1")
    await asyncio.wait_for(body(), timeout=5)
    assert [await store.runtime.get(k) for k in ("outer", "inner", "inner2")] == ["1", None, "1"]


async def test_other_tasks_wait_for_the_transaction_and_never_see_uncommitted_rows(store):
    entered, seen = asyncio.Event(), []

    async def reader():
        await entered.wait()
        seen.append(await store.orders.get("paper-a-btc-entry-1"))

    task = asyncio.create_task(reader())
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.orders.upsert(make_order())
            entered.set()
            await asyncio.sleep(0.05)  # give the reader every chance to run mid-transaction
            raise RuntimeError
    await asyncio.wait_for(task, timeout=5)
    assert seen == [None]


async def test_concurrent_standalone_writes_are_serialised(store):
    await asyncio.gather(*(store.runtime.set(f"k{i}", str(i)) for i in range(50)))
    assert raw(store.db.path, "SELECT COUNT(*) FROM runtime") == [(50,)]


# ---------------------------------------------------------------- pauses
async def test_paused_symbols_persist_across_reopen(db_path):
    store = await Storage.open(db_path)
    await store.pauses.pause("alpha", BTC, 1_000)
    await store.pauses.pause("alpha", ETH, 2_000)
    await store.pauses.pause("beta", ETH, 3_000)
    await store.pauses.pause("alpha", BTC, 9_000)  # already paused: no duplicate, time kept
    await store.pauses.resume("alpha", ETH)
    await store.pauses.resume("alpha", "NOT/PAUSED:USDT")  # no-op
    await store.close()

    store = await Storage.open(db_path)
    try:
        assert await store.pauses.list("alpha") == {BTC}
        assert await store.pauses.list("beta") == {ETH}
        assert await store.pauses.list("gamma") == set()
        assert raw(db_path, "SELECT paused_ms FROM paused_symbols WHERE bot = 'alpha'") == [(1_000,)]
    finally:
        await store.close()
